//! The Kiln SQL dialect: sqlparser's generic dialect plus Kiln's definition statements.
//!
//! ```sql
//! CREATE SOURCE name (col TYPE [NOT NULL], ...) WITH (connector = 'files', path = '...', format = 'parquet');
//! CREATE PRODUCT name [(col TYPE [NOT NULL], ...)]
//!   [PARTITIONED BY (col, ...)] [ORDER BY (col [ASC|DESC], ...)] [WITH (key = value, ...)]
//!   AS query;
//! CREATE STREAM name (col TYPE [NOT NULL], ..., [WATERMARK FOR col AS col - INTERVAL '5' SECOND])
//!   WITH (connector = 'log', topic = '...', ...);
//! CREATE MATERIALIZED VIEW name [(col TYPE [NOT NULL], ...)] [WITH (key = value, ...)] AS query;
//! CREATE AUDIT name ON product [WITH (severity = 'warn', ...)] [AS query];
//! CREATE TEST name FOR product GIVEN (table AS (query) | table FROM 'file', ...) EXPECT (query | FROM 'file');
//! ```
//!
//! A product's column list may carry standard constraints (`PRIMARY KEY`, `UNIQUE`,
//! `REFERENCES t (c)`, `CHECK (expr)`, as column or table constraints): they are checked
//! on every staged build before it commits (crate::compiler::checks), as are the audits
//! `ON` it. Tests run a product's query on fixtures, in memory.
//!
//! Streams are unbounded sources with an event-time watermark; materialized views are
//! continuous queries over streams. `kiln stream` runs both; `kiln build` compiles and
//! checks them but builds only products.
//!
//! A file holds any number of statements separated by `;`, with `--` and `/* */` comments.
//! Unquoted identifiers are lower-cased (DataFusion's normalization); quoted ones are kept.
//! Every AST node keeps its span in the *file*, so later errors (DataFusion's diagnostics
//! included) point at the file's line:column.

use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, Expr, Ident, IndexColumn, ObjectName, Query, SqlOption, TableConstraint, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location as SqlLocation, Token, Tokenizer};
use kiln_contracts::dialect::KilnDialect;

use crate::error::{ControlError, Location, caret_snippet};

/// One parsed definition.
#[derive(Debug, Clone)]
pub enum Statement {
    Source(SourceDef),
    Product(ProductDef),
    Stream(StreamDef),
    View(ViewDef),
    Audit(AuditDef),
    Test(TestDef),
}

impl Statement {
    pub fn name(&self) -> &str {
        match self {
            Statement::Source(s) => &s.name,
            Statement::Product(p) => &p.name,
            Statement::Stream(s) => &s.name,
            Statement::View(v) => &v.name,
            Statement::Audit(a) => &a.name,
            Statement::Test(t) => &t.name,
        }
    }

    pub fn at(&self) -> &Location {
        match self {
            Statement::Source(s) => &s.at,
            Statement::Product(p) => &p.at,
            Statement::Stream(s) => &s.at,
            Statement::View(v) => &v.at,
            Statement::Audit(a) => &a.at,
            Statement::Test(t) => &t.at,
        }
    }

    /// `WITH (tags = 'finance, daily')`: the statement's tags, lower-cased.
    pub fn tags(&self) -> Vec<String> {
        let options = match self {
            Statement::Source(s) => &s.options,
            Statement::Product(p) => &p.options,
            Statement::Stream(s) => &s.options,
            Statement::View(v) => &v.options,
            Statement::Audit(a) => &a.options,
            Statement::Test(_) => return Vec::new(),
        };
        options
            .get("tags")
            .map(|(v, _)| v.split(',').map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The product an audit is `ON` or a test is `FOR`.
    pub fn target(&self) -> Option<&str> {
        match self {
            Statement::Audit(a) => Some(&a.product),
            Statement::Test(t) => Some(&t.product),
            _ => None,
        }
    }

    /// What the checks of a product are defined by, as text (hashed into the checks
    /// fingerprint: a changed check re-runs without changing the product's build id).
    pub fn checks_text(&self) -> String {
        match self {
            Statement::Product(p) => p.constraints.iter().map(|c| format!("{}\n", c.kind)).collect(),
            Statement::Audit(a) => {
                let options: Vec<String> = a.options.0.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
                format!(
                    "audit {} on {} {} {}",
                    a.name,
                    a.product,
                    options.join(","),
                    a.query.as_ref().map(ToString::to_string).unwrap_or_default()
                )
            }
            _ => String::new(),
        }
    }

    /// The query of a product or materialized view.
    pub fn query(&self) -> Option<&Query> {
        match self {
            Statement::Product(p) => Some(&p.query),
            Statement::View(v) => Some(&v.query),
            Statement::Audit(a) => a.query.as_deref(),
            Statement::Source(_) | Statement::Stream(_) | Statement::Test(_) => None,
        }
    }
}

/// `CREATE AUDIT name ON product [WITH (...)] [AS query]`: the query's rows are failures.
/// Without a query, `min_rows` / `max_rows` bound the product's row count.
#[derive(Debug, Clone)]
pub struct AuditDef {
    pub name: String,
    pub at: Location,
    pub product: String,
    pub product_at: Location,
    pub options: Options,
    pub query: Option<Box<Query>>,
}

/// `CREATE TEST name FOR product GIVEN (...) EXPECT (...)`.
#[derive(Debug, Clone)]
pub struct TestDef {
    pub name: String,
    pub at: Location,
    pub product: String,
    pub product_at: Location,
    pub given: Vec<Fixture>,
    pub expect: FixtureRows,
    pub expect_at: Location,
}

/// One table's rows in a test: `table AS (query)` or `table FROM 'file'`.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub table: String,
    pub at: Location,
    pub rows: FixtureRows,
}

/// Fixture rows: a query over literals (`VALUES ...`), or a CSV, JSON or Parquet file
/// (path relative to the project root).
#[derive(Debug, Clone)]
pub enum FixtureRows {
    Query(Box<Query>),
    File(String),
}

/// A constraint of a product's contract, with its position.
#[derive(Debug, Clone)]
pub struct ConstraintDef {
    /// `CONSTRAINT name`, when given.
    pub name: Option<String>,
    pub kind: ConstraintKind,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub enum ConstraintKind {
    /// `UNIQUE (cols)`, or `PRIMARY KEY (cols)` (`primary`: the columns are also NOT NULL).
    Unique { columns: Vec<String>, primary: bool },
    /// `REFERENCES table (referred)`: every non-NULL `columns` value exists in `table`.
    References { columns: Vec<String>, table: String, referred: Vec<String> },
    /// `CHECK (expr)`: no row where `expr` is false.
    Check(Box<Expr>),
}

impl std::fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConstraintKind::Unique { columns, primary: true } => write!(f, "primary_key({})", columns.join(", ")),
            ConstraintKind::Unique { columns, primary: false } => write!(f, "unique({})", columns.join(", ")),
            ConstraintKind::References { columns, table, referred } => {
                write!(f, "references({} -> {table}({}))", columns.join(", "), referred.join(", "))
            }
            ConstraintKind::Check(expr) => write!(f, "check({expr})"),
        }
    }
}

/// `CREATE STREAM`.
#[derive(Debug, Clone)]
pub struct StreamDef {
    pub name: String,
    pub at: Location,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<Watermark>,
    pub options: Options,
}

/// `WATERMARK FOR column AS expr`: the event-time column and the watermark expression
/// (normally `column - INTERVAL '...'`, the allowed lateness).
#[derive(Debug, Clone)]
pub struct Watermark {
    pub column: String,
    pub expr: Box<Expr>,
    pub at: Location,
}

/// `CREATE MATERIALIZED VIEW`.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub at: Location,
    pub columns: Option<Vec<ColumnDef>>,
    pub options: Options,
    pub query: Box<Query>,
}

/// `CREATE SOURCE`.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub at: Location,
    pub columns: Vec<ColumnDef>,
    pub options: Options,
}

/// `CREATE PRODUCT`.
#[derive(Debug, Clone)]
pub struct ProductDef {
    pub name: String,
    pub at: Location,
    /// The contract column list, when declared.
    pub columns: Option<Vec<ColumnDef>>,
    pub partition_by: Vec<String>,
    /// `(column, ascending)`.
    pub order_by: Vec<(String, bool)>,
    pub options: Options,
    pub query: Box<Query>,
    /// Its contract's constraints (column and table constraints).
    pub constraints: Vec<ConstraintDef>,
}

/// `WITH (key = value, ...)`: keys lower-cased, values as text, each with its location.
#[derive(Debug, Clone, Default)]
pub struct Options(pub Vec<(String, String, Location)>);

impl Options {
    pub fn get(&self, key: &str) -> Option<(&str, &Location)> {
        self.0.iter().find(|(k, _, _)| k == key).map(|(_, v, at)| (v.as_str(), at))
    }

    /// Rejects any key outside `valid` (and `tags`, which every statement takes), naming
    /// the valid ones.
    pub fn check_known(&self, what: &str, valid: &[&str]) -> Result<(), ControlError> {
        for (key, _, at) in &self.0 {
            if key != "tags" && !valid.contains(&key.as_str()) {
                return Err(ControlError::Option {
                    at: at.clone(),
                    message: format!("unknown option `{key}` for {what} (valid: {})", valid.join(", ")),
                });
            }
        }
        Ok(())
    }
}

/// Normalizes an identifier the way DataFusion does: unquoted ones are lower-cased.
pub fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

use crate::statement_limits::too_complex;
pub use crate::statement_limits::{MAX_NESTED_CONSTRUCTS, MAX_OPERATORS};

/// Parses every statement of one file. `file` is the path shown in errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Statement>, ControlError> {
    let dialect = KilnDialect::default();
    let syntax = |e: ParserError, at: SqlLocation| syntax_error(file, text, e, at);
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| syntax(e.into(), SqlLocation { line: 1, column: 1 }))?;
    if let Some((at, message)) = too_complex(&tokens) {
        return Err(syntax(ParserError::ParserError(message), at));
    }
    let mut parser = Parser::new(&dialect)
        .with_tokens_with_locations(crate::windows::window_tvfs(crate::unnest::normalize_tokens(tokens)));
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        let statement = parse_statement(&mut parser, file).map_err(|e| syntax(e, parser.peek_token().span.start))?;
        out.push(statement);
        let next = parser.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            let e = ParserError::ParserError(format!("expected `;` or end of file, found {}", next.token));
            return Err(syntax(e, next.span.start));
        }
    }
    Ok(out)
}

/// The definitions a file that does not parse still names, found by tokens alone
/// (`CREATE [OR REPLACE] PRODUCT|SOURCE|STREAM|MATERIALIZED VIEW name` at the start of a
/// statement): (kind keyword, name as normalized, where). So its products are reported
/// failed with the file's syntax error rather than missing, and what reads them is
/// skipped rather than told the table is unknown. Empty when the text does not even
/// tokenize.
pub fn declared_names(file: &str, text: &str) -> Vec<(&'static str, String, Location)> {
    let dialect = KilnDialect::default();
    let Ok(tokens) = Tokenizer::new(&dialect, text).tokenize_with_location() else { return Vec::new() };
    let words: Vec<_> = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let keyword = |i: usize, k: &str| {
        words.get(i).is_some_and(
            |t| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k)),
        )
    };
    let mut out = Vec::new();
    let mut start = true;
    for i in 0..words.len() {
        if matches!(words[i].token, Token::SemiColon) {
            start = true;
            continue;
        }
        if !std::mem::take(&mut start) || !keyword(i, "create") {
            continue;
        }
        let mut j = i + 1;
        if keyword(j, "or") && keyword(j + 1, "replace") {
            j += 2;
        }
        let kind = if keyword(j, "product") {
            "product"
        } else if keyword(j, "source") {
            "source"
        } else if keyword(j, "stream") {
            "stream"
        } else if keyword(j, "materialized") && keyword(j + 1, "view") {
            j += 1;
            "view"
        } else {
            continue;
        };
        if let Some(t) = words.get(j + 1)
            && let Token::Word(w) = &t.token
        {
            let ident = datafusion::sql::sqlparser::ast::Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: t.span,
            };
            out.push((kind, normalize(&ident), loc(file, t.span.start)));
        }
    }
    out
}

fn loc(file: &str, at: SqlLocation) -> Location {
    Location { file: file.to_owned(), line: at.line.max(1), column: at.column.max(1) }
}

fn syntax_error(file: &str, text: &str, e: ParserError, fallback: SqlLocation) -> ControlError {
    let raw = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nests too deeply".to_owned(),
    };
    // sqlparser appends " at Line: L, Column: C"; take the position from it when present.
    let (message, at) = match raw.rsplit_once(" at Line: ") {
        Some((msg, pos)) => {
            let mut nums = pos.split(", Column: ").map(|n| n.trim().parse::<u64>().ok());
            match (nums.next().flatten(), nums.next().flatten()) {
                (Some(line), Some(column)) => (msg.to_owned(), SqlLocation { line, column }),
                _ => (raw.clone(), fallback),
            }
        }
        None => (raw, fallback),
    };
    let at = loc(file, at);
    let snippet = caret_snippet(text, at.line, at.column);
    ControlError::Syntax { message: message.replace("sql parser error: ", ""), at, snippet }
}

fn peek_word(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn parse_statement(parser: &mut Parser, file: &str) -> Result<Statement, ParserError> {
    let start = parser.peek_token();
    if !parser.parse_keyword(Keyword::CREATE) {
        return parser.expected("CREATE SOURCE, PRODUCT, STREAM, MATERIALIZED VIEW, AUDIT or TEST", start);
    }
    if peek_word(parser, "SOURCE") {
        parser.next_token();
        return parse_source(parser, file).map(Statement::Source);
    }
    if peek_word(parser, "PRODUCT") {
        parser.next_token();
        return parse_product(parser, file).map(Statement::Product);
    }
    if peek_word(parser, "STREAM") {
        parser.next_token();
        return parse_stream(parser, file).map(Statement::Stream);
    }
    if peek_word(parser, "MATERIALIZED") {
        parser.next_token();
        parser.expect_keyword(Keyword::VIEW)?;
        return parse_view(parser, file).map(Statement::View);
    }
    if peek_word(parser, "AUDIT") {
        parser.next_token();
        return parse_audit(parser, file).map(Statement::Audit);
    }
    if peek_word(parser, "TEST") {
        parser.next_token();
        return parse_test(parser, file).map(Statement::Test);
    }
    let found = parser.peek_token();
    parser.expected("SOURCE, PRODUCT, STREAM, MATERIALIZED VIEW, AUDIT or TEST after CREATE", found)
}

fn parse_stream(parser: &mut Parser, file: &str) -> Result<StreamDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    parser.expect_token(&Token::LParen)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    loop {
        if peek_word(parser, "WATERMARK") {
            let wm_at = loc(file, parser.next_token().span.start);
            parser.expect_keyword(Keyword::FOR)?;
            let column = normalize(&parser.parse_identifier()?);
            parser.expect_keyword(Keyword::AS)?;
            let expr = Box::new(parser.parse_expr()?);
            if watermark.replace(Watermark { column, expr, at: wm_at.clone() }).is_some() {
                return Err(ParserError::ParserError(format!(
                    "a stream has at most one WATERMARK at Line: {}, Column: {}",
                    wm_at.line, wm_at.column
                )));
            }
        } else {
            columns.push(parser.parse_column_def()?);
        }
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen)?;
    let options = parse_with(parser, file)?;
    Ok(StreamDef { name, at, columns, watermark, options })
}

fn parse_view(parser: &mut Parser, file: &str) -> Result<ViewDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    let columns = if parser.peek_token().token == Token::LParen { Some(parser.parse_columns()?.0) } else { None };
    let options = parse_with(parser, file)?;
    parser.expect_keyword(Keyword::AS)?;
    let query = parser.parse_query()?;
    Ok(ViewDef { name, at, columns, options, query })
}

fn parse_name(parser: &mut Parser, file: &str) -> Result<(String, Location), ParserError> {
    let at = parser.peek_token().span.start;
    let ident = parser.parse_identifier()?;
    Ok((normalize(&ident), loc(file, at)))
}

fn parse_source(parser: &mut Parser, file: &str) -> Result<SourceDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    let (columns, _constraints) = parser.parse_columns()?;
    if columns.is_empty() {
        let found = parser.peek_token();
        return parser.expected("a column list: a source declares its schema", found);
    }
    let options = parse_with(parser, file)?;
    Ok(SourceDef { name, at, columns, options })
}

fn parse_product(parser: &mut Parser, file: &str) -> Result<ProductDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    let (columns, constraints) = if parser.peek_token().token == Token::LParen {
        let list_at = parser.peek_token().span.start;
        let (columns, table_constraints) = parser.parse_columns()?;
        let constraints = constraints_of(&columns, &table_constraints, file, list_at)?;
        (Some(columns), constraints)
    } else {
        (None, Vec::new())
    };
    let mut partition_by = Vec::new();
    let mut order_by = Vec::new();
    if peek_word(parser, "PARTITIONED") {
        parser.next_token();
        parser.expect_keyword(Keyword::BY)?;
        parser.expect_token(&Token::LParen)?;
        loop {
            partition_by.push(normalize(&parser.parse_identifier()?));
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    if parser.parse_keywords(&[Keyword::ORDER, Keyword::BY]) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let column = normalize(&parser.parse_identifier()?);
            let ascending = !parser.parse_keyword(Keyword::DESC);
            if ascending {
                let _ = parser.parse_keyword(Keyword::ASC);
            }
            order_by.push((column, ascending));
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    let options = parse_with(parser, file)?;
    parser.expect_keyword(Keyword::AS)?;
    let query = parser.parse_query()?;
    Ok(ProductDef { name, at, columns, partition_by, order_by, options, query, constraints })
}

/// The constraints of a product's column list: column options (`PRIMARY KEY`, `UNIQUE`,
/// `REFERENCES`, `CHECK`) and table constraints, each at its position. Options that
/// describe storage or defaults (`DEFAULT`, `GENERATED`, ...) are refused: a product's
/// columns are computed by its query.
fn constraints_of(
    columns: &[ColumnDef],
    table: &[TableConstraint],
    file: &str,
    list_at: SqlLocation,
) -> Result<Vec<ConstraintDef>, ParserError> {
    let located = |ident: Option<&Ident>, fallback: SqlLocation| match ident {
        Some(i) if i.span.start.line > 0 => loc(file, i.span.start),
        _ => loc(file, fallback),
    };
    let name_of = |n: &Option<Ident>| n.as_ref().map(normalize);
    let refused = |what: String, at: &Location| {
        ParserError::ParserError(format!("{what} at Line: {}, Column: {}", at.line, at.column))
    };
    let mut out = Vec::new();
    for c in columns {
        let column = normalize(&c.name);
        let at = located(Some(&c.name), list_at);
        for option in &c.options {
            let name = name_of(&option.name);
            let kind = match &option.option {
                ColumnOption::NotNull | ColumnOption::Null | ColumnOption::Comment(_) => continue,
                ColumnOption::PrimaryKey(_) => ConstraintKind::Unique { columns: vec![column.clone()], primary: true },
                ColumnOption::Unique(_) => ConstraintKind::Unique { columns: vec![column.clone()], primary: false },
                ColumnOption::ForeignKey(fk) => {
                    let referred: Vec<String> = fk.referred_columns.iter().map(normalize).collect();
                    ConstraintKind::References {
                        columns: vec![column.clone()],
                        table: object_name(&fk.foreign_table),
                        referred: if referred.is_empty() { vec![column.clone()] } else { referred },
                    }
                }
                ColumnOption::Check(check) => ConstraintKind::Check(check.expr.clone()),
                other => {
                    return Err(refused(
                        format!(
                            "column `{column}`: `{other}` is not a product column option (products take NOT NULL, COMMENT and constraints: PRIMARY KEY, UNIQUE, REFERENCES, CHECK)"
                        ),
                        &at,
                    ));
                }
            };
            out.push(ConstraintDef { name, kind, at: at.clone() });
        }
    }
    let idents = |cols: &[IndexColumn], at: &Location| -> Result<Vec<String>, ParserError> {
        cols.iter()
            .map(|c| match &c.column.expr {
                Expr::Identifier(i) => Ok(normalize(i)),
                other => Err(refused(format!("a key lists columns, not `{other}`"), at)),
            })
            .collect()
    };
    for constraint in table {
        let (name, kind, at) = match constraint {
            TableConstraint::PrimaryKey(pk) => {
                let at = located(pk.columns.first().and_then(first_ident), list_at);
                (name_of(&pk.name), ConstraintKind::Unique { columns: idents(&pk.columns, &at)?, primary: true }, at)
            }
            TableConstraint::Unique(u) => {
                let at = located(u.columns.first().and_then(first_ident), list_at);
                (name_of(&u.name), ConstraintKind::Unique { columns: idents(&u.columns, &at)?, primary: false }, at)
            }
            TableConstraint::ForeignKey(fk) => {
                let at = located(fk.columns.first(), list_at);
                let columns: Vec<String> = fk.columns.iter().map(normalize).collect();
                let referred: Vec<String> = fk.referred_columns.iter().map(normalize).collect();
                let referred = if referred.is_empty() { columns.clone() } else { referred };
                (
                    name_of(&fk.name),
                    ConstraintKind::References { columns, table: object_name(&fk.foreign_table), referred },
                    at,
                )
            }
            TableConstraint::Check(check) => {
                (name_of(&check.name), ConstraintKind::Check(check.expr.clone()), loc(file, list_at))
            }
            other => {
                return Err(refused(
                    format!("`{other}` is not a product constraint (PRIMARY KEY, UNIQUE, FOREIGN KEY, CHECK)"),
                    &loc(file, list_at),
                ));
            }
        };
        out.push(ConstraintDef { name, kind, at });
    }
    Ok(out)
}

fn first_ident(c: &IndexColumn) -> Option<&Ident> {
    match &c.column.expr {
        Expr::Identifier(i) => Some(i),
        _ => None,
    }
}

/// The last part of a (possibly qualified) table name, normalized.
fn object_name(name: &ObjectName) -> String {
    name.0.last().and_then(|p| p.as_ident()).map(normalize).unwrap_or_else(|| name.to_string())
}

fn parse_audit(parser: &mut Parser, file: &str) -> Result<AuditDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    parser.expect_keyword(Keyword::ON)?;
    let (product, product_at) = parse_name(parser, file)?;
    let options = parse_with(parser, file)?;
    let query = if parser.parse_keyword(Keyword::AS) { Some(parser.parse_query()?) } else { None };
    Ok(AuditDef { name, at, product, product_at, options, query })
}

fn parse_test(parser: &mut Parser, file: &str) -> Result<TestDef, ParserError> {
    let (name, at) = parse_name(parser, file)?;
    parser.expect_keyword(Keyword::FOR)?;
    let (product, product_at) = parse_name(parser, file)?;
    let mut given = Vec::new();
    if peek_word(parser, "GIVEN") {
        parser.next_token();
        parser.expect_token(&Token::LParen)?;
        loop {
            let (table, table_at) = parse_name(parser, file)?;
            let rows = parse_fixture_rows(parser)?;
            given.push(Fixture { table, at: table_at, rows });
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    if !peek_word(parser, "EXPECT") {
        let found = parser.peek_token();
        return parser.expected("EXPECT (query) or EXPECT FROM 'file'", found);
    }
    let expect_at = loc(file, parser.next_token().span.start);
    let expect = if parser.parse_keyword(Keyword::FROM) {
        FixtureRows::File(parse_string(parser)?)
    } else {
        parser.expect_token(&Token::LParen)?;
        let query = parser.parse_query()?;
        parser.expect_token(&Token::RParen)?;
        FixtureRows::Query(query)
    };
    Ok(TestDef { name, at, product, product_at, given, expect, expect_at })
}

/// `AS (query)` or `FROM 'file'`.
fn parse_fixture_rows(parser: &mut Parser) -> Result<FixtureRows, ParserError> {
    if parser.parse_keyword(Keyword::FROM) {
        return Ok(FixtureRows::File(parse_string(parser)?));
    }
    parser.expect_keyword(Keyword::AS)?;
    parser.expect_token(&Token::LParen)?;
    let query = parser.parse_query()?;
    parser.expect_token(&Token::RParen)?;
    Ok(FixtureRows::Query(query))
}

fn parse_string(parser: &mut Parser) -> Result<String, ParserError> {
    let token = parser.next_token();
    match token.token {
        Token::SingleQuotedString(s) => Ok(s),
        _ => parser.expected("a quoted file path", token),
    }
}

fn parse_with(parser: &mut Parser, file: &str) -> Result<Options, ParserError> {
    if !peek_word(parser, "WITH") {
        return Ok(Options::default());
    }
    let at = parser.peek_token().span.start;
    let mut out = Vec::new();
    for option in parser.parse_options(Keyword::WITH)? {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(ParserError::ParserError(format!(
                "options are written key = value at Line: {}, Column: {}",
                at.line, at.column
            )));
        };
        let value = match &value {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Number(n, _) => n.clone(),
                Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        let key_at = loc(file, key.span.start);
        out.push((key.value.to_lowercase(), value, key_at));
    }
    Ok(Options(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_statements_with_comments() {
        let text = "-- sources\nCREATE SOURCE T (a BIGINT NOT NULL) WITH (connector = 'files', Path = 'd/');\n\
                    /* a product */ CREATE PRODUCT \"Out\" (a BIGINT NOT NULL) ORDER BY (a DESC)\n\
                    WITH (max_rows_per_file = 10) AS WITH x AS (SELECT a FROM t) SELECT a FROM x;";
        let statements = parse_file("m.sql", text).unwrap();
        assert_eq!(statements.len(), 2);
        let Statement::Source(s) = &statements[0] else { panic!("not a source") };
        assert_eq!((s.name.as_str(), s.at.line, s.at.column), ("t", 2, 15));
        assert_eq!(s.options.get("path").map(|(v, _)| v), Some("d/"));
        let Statement::Product(p) = &statements[1] else { panic!("not a product") };
        assert_eq!(p.name, "Out");
        assert_eq!(p.order_by, [("a".to_owned(), false)]);
        assert_eq!(p.options.get("max_rows_per_file").map(|(v, _)| v), Some("10"));
        assert_eq!(p.query.to_string(), "WITH x AS (SELECT a FROM t) SELECT a FROM x");
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let err = parse_file("m.sql", "CREATE PRODUCT p AS\n  SELECT a FROM t WHERE;").unwrap_err();
        let ControlError::Syntax { at, snippet, .. } = &err else { panic!("{err}") };
        assert_eq!((at.line, at.column), (2, 24));
        assert_eq!(snippet, "2 |   SELECT a FROM t WHERE;\n  |                        ^");
        let err = parse_file("m.sql", "CREATE TABLE x (a INT)").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.sql:1:8: Expected: SOURCE, PRODUCT, STREAM, MATERIALIZED VIEW, AUDIT or TEST after CREATE, found: TABLE"
        );
    }

    #[test]
    fn parses_streams_and_materialized_views() {
        let text = "CREATE STREAM clicks (user_id BIGINT NOT NULL, ts TIMESTAMP NOT NULL,\n\
                    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (connector = 'log', topic = 'clicks');\n\
                    CREATE MATERIALIZED VIEW per_minute WITH (emit = 'final') AS\n\
                    SELECT kiln_tumble_start(ts, INTERVAL '1' MINUTE) AS w, count(*) AS n FROM clicks GROUP BY 1;";
        let statements = parse_file("s.sql", text).unwrap();
        let Statement::Stream(s) = &statements[0] else { panic!("not a stream") };
        assert_eq!(s.columns.len(), 2);
        let wm = s.watermark.as_ref().unwrap();
        assert_eq!((wm.column.as_str(), wm.expr.to_string().as_str()), ("ts", "ts - INTERVAL '5' SECOND"));
        assert_eq!((wm.at.line, wm.at.column), (2, 1));
        assert_eq!(s.options.get("topic").map(|(v, _)| v), Some("clicks"));
        let Statement::View(v) = &statements[1] else { panic!("not a view") };
        assert_eq!(v.name, "per_minute");
        assert!(statements[1].query().is_some() && statements[0].query().is_none());
        let err =
            parse_file("s.sql", "CREATE STREAM s (a INT, WATERMARK FOR a AS a, WATERMARK FOR a AS a)").unwrap_err();
        assert!(err.to_string().contains("at most one WATERMARK"), "{err}");
    }

    #[test]
    fn unknown_options_list_the_valid_ones() {
        let statements = parse_file("m.sql", "CREATE PRODUCT p WITH (colour = 'red') AS SELECT 1").unwrap();
        let Statement::Product(p) = &statements[0] else { panic!("not a product") };
        let err = p.options.check_known("a product", &["existing_data", "max_rows_per_file"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.sql:1:24: invalid option: unknown option `colour` for a product (valid: existing_data, max_rows_per_file)"
        );
    }

    #[test]
    fn parses_constraints_audits_and_tests() {
        let text = "CREATE PRODUCT o (\n  k BIGINT NOT NULL PRIMARY KEY,\n  c BIGINT REFERENCES customer (c_custkey),\n  \
                    s VARCHAR CHECK (s IN ('F', 'O')),\n  CONSTRAINT pair UNIQUE (c, k)\n) AS SELECT 1;\n\
                    CREATE AUDIT late ON o WITH (severity = 'warn') AS SELECT * FROM o WHERE k > 1;\n\
                    CREATE AUDIT size ON o WITH (min_rows = 1);\n\
                    CREATE TEST t FOR o GIVEN (orders AS (VALUES (1, 2)), customer FROM 'f.csv') EXPECT (VALUES (1));";
        let statements = parse_file("m.sql", text).unwrap();
        let Statement::Product(p) = &statements[0] else { panic!("not a product") };
        let kinds: Vec<String> = p.constraints.iter().map(|c| c.kind.to_string()).collect();
        assert_eq!(
            kinds,
            ["primary_key(k)", "references(c -> customer(c_custkey))", "check(s IN ('F', 'O'))", "unique(c, k)"]
        );
        assert_eq!(p.constraints[3].name.as_deref(), Some("pair"));
        assert_eq!((p.constraints[1].at.line, p.constraints[1].at.column), (3, 3));
        let Statement::Audit(a) = &statements[1] else { panic!("not an audit") };
        assert_eq!((a.product.as_str(), a.options.get("severity").map(|(v, _)| v)), ("o", Some("warn")));
        assert!(a.query.is_some());
        let Statement::Audit(size) = &statements[2] else { panic!("not an audit") };
        assert!(size.query.is_none());
        let Statement::Test(t) = &statements[3] else { panic!("not a test") };
        assert_eq!(t.given.len(), 2);
        assert!(matches!(&t.given[1].rows, FixtureRows::File(f) if f == "f.csv"));
        assert!(matches!(&t.expect, FixtureRows::Query(_)));
        // What the checks fingerprint hashes: constraints of products, audits whole.
        assert!(statements[0].checks_text().contains("unique(c, k)"));
        assert!(statements[3].checks_text().is_empty());
        let err = parse_file("m.sql", "CREATE PRODUCT p (a INT DEFAULT 1) AS SELECT 1").unwrap_err();
        assert!(
            err.to_string().starts_with("m.sql:1:19: column `a`: `DEFAULT 1` is not a product column option"),
            "{err}"
        );
        let err = parse_file("m.sql", "CREATE TEST t FOR p GIVEN (x AS (VALUES (1)))").unwrap_err();
        assert!(err.to_string().contains("EXPECT (query) or EXPECT FROM 'file'"), "{err}");
    }
}
