use crate::{column, ctx_with, error};

#[tokio::test]
async fn sha256_hex_matches_pinned_hashlib_answers() {
    // Pinned from Python's hashlib.sha256(...).hexdigest().
    let ctx = ctx_with(&[]);
    let got = column(
        &ctx,
        "SELECT kiln_sha256_hex(v) FROM (VALUES ('abc'), (''), ('The quick brown fox jumps over the lazy dog'), (NULL)) t(v)",
    )
    .await;
    assert_eq!(
        got,
        [
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592",
            "NULL",
        ]
    );
    // Binary input and the named-argument form.
    let got = column(&ctx, "SELECT kiln_sha256_hex(value => X'616263')").await;
    assert_eq!(got, ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]);
}

#[tokio::test]
async fn pii_hash_matches_rfc_4231() {
    let key1 = "\u{0b}".repeat(20);
    let key4: String = (1u8..=25).map(char::from).collect();
    let ctx = ctx_with(&[("k1", &key1), ("k2", "Jefe"), ("k4", &key4)]);
    // RFC 4231 test cases 1, 2 and 4 (HMAC-SHA-256).
    assert_eq!(
        column(&ctx, "SELECT kiln_pii_hash('Hi There', key => 'k1')").await,
        ["b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"]
    );
    assert_eq!(
        column(&ctx, "SELECT kiln_pii_hash(value => 'what do ya want for nothing?', key => 'k2')").await,
        ["5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"]
    );
    let data4 = format!("X'{}'", "cd".repeat(50));
    assert_eq!(
        column(&ctx, &format!("SELECT kiln_pii_hash({data4}, 'k4')")).await,
        ["82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"]
    );
    assert_eq!(column(&ctx, "SELECT kiln_pii_hash(CAST(NULL AS VARCHAR), key => 'k2')").await, ["NULL"]);
}

#[tokio::test]
async fn missing_secrets_fail_at_planning_naming_the_secret() {
    let ctx = ctx_with(&[("pii_key", "s3cr3t-value")]);
    let err = error(&ctx, "SELECT kiln_pii_hash('x', key => 'nope')").await;
    assert!(err.contains("secret `nope` is not declared in kiln.toml [secrets] (declared: pii_key)"), "{err}");
    assert!(!err.contains("s3cr3t-value"));
    let err = error(&ctx, "SELECT kiln_pii_hash(v, key => v) FROM (VALUES ('a')) t(v)").await;
    assert!(err.contains("`key` must be a string literal naming a secret"), "{err}");
    // The plan names the secret, never its value.
    let plan = column(&ctx, "EXPLAIN SELECT kiln_pii_hash(v, key => 'pii_key') FROM (VALUES ('a')) t(v)").await;
    let plan2: Vec<String> = ctx
        .sql("EXPLAIN SELECT kiln_pii_hash(v, key => 'pii_key') FROM (VALUES ('a')) t(v)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| format!("{b:?}"))
        .collect();
    assert!(!plan.is_empty());
    assert!(plan2.iter().all(|p| !p.contains("s3cr3t-value")) && plan2.iter().any(|p| p.contains("pii_key")));
}
