use crate::{column, ctx_with, error};

#[tokio::test]
async fn tumble_windows_are_epoch_aligned_and_half_open() {
    let ctx = ctx_with(&[]);
    let sql = |f: &str| {
        format!(
            "SELECT {f} FROM (VALUES (TIMESTAMP '2024-01-01 10:17:00'), (TIMESTAMP '2024-01-01 11:00:00'), \
             (TIMESTAMP '1969-12-31 23:30:00'), (NULL)) t(ts)"
        )
    };
    assert_eq!(
        column(&ctx, &sql("kiln_tumble_start(ts, INTERVAL '1' HOUR)")).await,
        ["2024-01-01T10:00:00", "2024-01-01T11:00:00", "1969-12-31T23:00:00", "NULL"]
    );
    assert_eq!(
        column(&ctx, &sql("kiln_tumble_end(ts, size => INTERVAL '1' HOUR)")).await,
        ["2024-01-01T11:00:00", "2024-01-01T12:00:00", "1970-01-01T00:00:00", "NULL"]
    );
}

#[tokio::test]
async fn hop_starts_list_every_window_containing_the_row() {
    let ctx = ctx_with(&[]);
    let got = column(
        &ctx,
        "SELECT kiln_hop_starts(TIMESTAMP '2024-01-01 10:17:00', INTERVAL '5' MINUTE, INTERVAL '15' MINUTE)",
    )
    .await;
    assert_eq!(got, ["[2024-01-01T10:05:00, 2024-01-01T10:10:00, 2024-01-01T10:15:00]"]);
    // A row exactly on a boundary belongs to the window starting there, not the one ending.
    let got = column(
        &ctx,
        "SELECT kiln_hop_starts(TIMESTAMP '2024-01-01 10:15:00', INTERVAL '5' MINUTE, INTERVAL '10' MINUTE)",
    )
    .await;
    assert_eq!(got, ["[2024-01-01T10:10:00, 2024-01-01T10:15:00]"]);
}

#[tokio::test]
async fn bad_intervals_are_errors() {
    let ctx = ctx_with(&[]);
    let e = error(&ctx, "SELECT kiln_tumble_start(TIMESTAMP '2024-01-01 00:00:00', INTERVAL '1' MONTH)").await;
    assert!(e.contains("months, which have no fixed length"), "{e}");
    let e = error(
        &ctx,
        "SELECT kiln_hop_starts(TIMESTAMP '2024-01-01 00:00:00', INTERVAL '10' MINUTE, INTERVAL '5' MINUTE)",
    )
    .await;
    assert!(e.contains("slide must not exceed size"), "{e}");
    let e = error(&ctx, "SELECT kiln_tumble_start(1, INTERVAL '1' HOUR)").await;
    assert!(e.contains("`ts` must be a timestamp"), "{e}");
}
