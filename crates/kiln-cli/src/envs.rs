//! The environment commands: `kiln envs`, `kiln env create|drop|show|diff`, `kiln promote`
//! and `kiln table-diff` (kiln::envs does the work; this module parses and prints).

use std::process::ExitCode;

use clap::Subcommand;
use kiln::KilnError;

use crate::progress::CliProgress;
use crate::{ProjectDir, WaitArg, json_text, render};

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCommand {
    /// A new environment bound to the builds of --from (default prod): no data copied.
    Create {
        name: String,
        #[arg(long, default_value = "prod")]
        from: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Delete an environment and the builds only it has.
    Drop {
        name: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Where each dataset of an environment is: the Delta table and version to read.
    Show {
        name: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[arg(long)]
        json: bool,
    },
    /// Per product: the same build in A and B, a different one (and why), or only in one.
    Diff {
        a: String,
        b: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct PromoteArgs {
    from: String,
    /// The environment to promote into.
    #[arg(long, default_value = "prod")]
    to: String,
    #[command(flatten)]
    dir: ProjectDir,
    #[command(flatten)]
    wait: WaitArg,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TableDiffArgs {
    product: String,
    /// The two environments (`--env dev --env prod`; one: against prod).
    #[arg(long = "env", required = true)]
    envs: Vec<String>,
    /// Key columns (comma-separated) to match rows by.
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    #[command(flatten)]
    dir: ProjectDir,
    #[arg(long)]
    json: bool,
}

/// Prints `value` as JSON, or with `text`.
#[expect(clippy::result_large_err, reason = "called once per command; KilnError is the binary's one error")]
fn print<T: serde::Serialize>(value: &T, json: bool, text: impl FnOnce(&T)) -> Result<ExitCode, KilnError> {
    if json {
        out!("{}", json_text(value).map_err(KilnError::Internal)?);
    } else {
        text(value);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln envs`.
pub(crate) async fn list(dir: ProjectDir, json: bool) -> Result<ExitCode, KilnError> {
    let list = kiln::envs::envs(&dir.resolve(None)?).await?;
    print(&list, json, render::envs)
}

/// `kiln env ...`.
pub(crate) async fn env(command: EnvCommand) -> Result<ExitCode, KilnError> {
    match command {
        EnvCommand::Create { name, from, dir, wait } => {
            let observer = CliProgress::new(false);
            let e = kiln::envs::env_create(&dir.resolve(None)?, &name, &from, wait.wait(), &observer).await?;
            out!("created environment {} from {} ({} products, no data copied)", e.name, e.from, e.products);
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Drop { name, dir, wait } => {
            let n = kiln::envs::env_drop(&dir.resolve(None)?, &name, wait.wait(), &CliProgress::new(false)).await?;
            out!("dropped environment {name} ({n} objects deleted)");
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Show { name, dir, json } => {
            let t = kiln::envs::env_show(&dir.resolve(None)?, &name).await?;
            print(&t, json, |t| {
                for d in &t.datasets {
                    out!("{}: {} version {} (build {})", d.dataset, d.table, d.version, render::short(&d.build_id));
                }
            })
        }
        EnvCommand::Diff { a, b, dir, json } => {
            let r = kiln::envs::env_diff(&dir.resolve(None)?, &a, &b).await?;
            print(&r, json, render::env_diff)
        }
    }
}

/// `kiln promote FROM [--to TO]`.
pub(crate) async fn promote(args: PromoteArgs) -> Result<ExitCode, KilnError> {
    let observer = CliProgress::new(false);
    let r = kiln::envs::promote(&args.dir.resolve(None)?, &args.from, &args.to, args.wait.wait(), &observer).await?;
    print(&r, args.json, |r| {
        for d in &r.changed {
            let was = d.was.as_deref().map_or("none", render::short);
            out!("{}: {} -> {}", d.dataset, was, render::short(&d.now));
        }
        out!(
            "promoted {} into {}: {} changed, {} unchanged in {:.2}s",
            r.from,
            r.to,
            r.changed.len(),
            r.unchanged,
            r.seconds
        );
    })
}

/// `kiln table-diff PRODUCT --env A [--env B] [--key K,...]`.
pub(crate) async fn table_diff(args: TableDiffArgs) -> Result<ExitCode, KilnError> {
    let (a, b) = match args.envs.as_slice() {
        [a] => (a.clone(), kiln::data::warehouse::PROD.to_owned()),
        [a, b] => (a.clone(), b.clone()),
        _ => return Err(KilnError::Usage("table-diff takes one or two --env".into())),
    };
    let r = kiln::envs::table_diff(&args.dir.resolve(None)?, &args.product, &a, &b, &args.key).await?;
    print(&r, args.json, render::table_diff)
}
