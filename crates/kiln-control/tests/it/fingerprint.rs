//! query_fp over a corpus of query pairs: pairs that compute the same thing (modulo
//! formatting, comments, keyword case, quoting, alias names, CTE vs subquery, conjunct and
//! join-input order) share a fingerprint; pairs that compute different things do not.

use crate::Tpch;
use crate::tpch;

struct Pair {
    name: &'static str,
    a: String,
    b: String,
}

fn pair(name: &'static str, a: &str, b: &str) -> Pair {
    Pair { name, a: a.to_owned(), b: b.to_owned() }
}

fn same_pairs() -> Vec<Pair> {
    let q3_aliased = "
        SELECT l.l_orderkey, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue, o.o_orderdate, o.o_shippriority
        FROM customer c, orders o, lineitem l
        WHERE c.c_mktsegment = 'BUILDING' AND c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey
          AND o.o_orderdate < DATE '1995-03-15' AND l.l_shipdate > DATE '1995-03-15'
        GROUP BY l.l_orderkey, o.o_orderdate, o.o_shippriority
        ORDER BY revenue DESC, o.o_orderdate LIMIT 10";
    vec![
        pair("q1 reformatted", tpch::Q1, &tpch::Q1.split_whitespace().collect::<Vec<_>>().join(" ")),
        pair("q1 with comments", tpch::Q1, &format!("-- pricing summary\n{}\n/* report */", tpch::Q1.replace("FROM lineitem", "FROM /* the big one */ lineitem -- facts\n"))),
        pair("q1 keyword case", tpch::Q1, &tpch::Q1.replace("SELECT", "select").replace("FROM", "from").replace("WHERE", "where").replace("GROUP BY", "group by").replace("ORDER BY", "Order By").replace("sum(", "SUM(").replace("avg(", "AVG(")),
        pair("q6 quoted identifiers", tpch::Q6, &tpch::Q6.replace("l_discount", "\"l_discount\"").replace("FROM lineitem", "FROM \"lineitem\"")),
        pair("q3 table aliases", tpch::Q3, q3_aliased),
        pair("q3 alias names", q3_aliased, &q3_aliased.replace("c.", "cust.").replace(" c,", " cust,").replace("o.", "ord.").replace(" o,", " ord,").replace("l.", "li.").replace(" l\n", " li\n")),
        pair("q3 join syntax", tpch::Q3, "
            SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
            FROM customer JOIN orders ON c_custkey = o_custkey JOIN lineitem ON l_orderkey = o_orderkey
            WHERE c_mktsegment = 'BUILDING' AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
            GROUP BY l_orderkey, o_orderdate, o_shippriority
            ORDER BY revenue DESC, o_orderdate LIMIT 10"),
        pair("q3 conjunct order", tpch::Q3, "
            SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
            FROM customer, orders, lineitem
            WHERE l_shipdate > DATE '1995-03-15' AND o_orderdate < DATE '1995-03-15' AND l_orderkey = o_orderkey
              AND c_custkey = o_custkey AND c_mktsegment = 'BUILDING'
            GROUP BY l_orderkey, o_orderdate, o_shippriority
            ORDER BY revenue DESC, o_orderdate LIMIT 10"),
        pair("q3 group key order", tpch::Q3, &tpch::Q3.replace("GROUP BY l_orderkey, o_orderdate, o_shippriority", "GROUP BY o_shippriority, l_orderkey, o_orderdate")),
        pair("q10 cte", tpch::Q10, "
            WITH returned AS (SELECT * FROM lineitem WHERE l_returnflag = 'R')
            SELECT c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) AS revenue,
                   c_acctbal, n_name, c_address, c_phone, c_comment
            FROM customer, orders, returned, nation
            WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey
              AND o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01'
              AND c_nationkey = n_nationkey
            GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
            ORDER BY revenue DESC LIMIT 20"),
        pair("cte vs inline subquery",
            "WITH big AS (SELECT o_custkey, o_totalprice FROM orders WHERE o_totalprice > 1000) SELECT o_custkey, sum(o_totalprice) AS total FROM big GROUP BY o_custkey",
            "SELECT o_custkey, sum(o_totalprice) AS total FROM (SELECT o_custkey, o_totalprice FROM orders WHERE o_totalprice > 1000) AS t GROUP BY o_custkey"),
        pair("cte names",
            "WITH a AS (SELECT c_custkey, c_name FROM customer) SELECT * FROM a",
            "WITH customers_renamed AS (SELECT c_custkey, c_name FROM customer) SELECT * FROM customers_renamed"),
        pair("intermediate column aliases",
            "SELECT k, s FROM (SELECT o_custkey AS k, sum(o_totalprice) AS s FROM orders GROUP BY o_custkey) t",
            "SELECT x AS k, y AS s FROM (SELECT o_custkey AS x, sum(o_totalprice) AS y FROM orders GROUP BY o_custkey) u"),
        pair("filter in subquery vs outer",
            "SELECT o_orderkey FROM (SELECT * FROM orders) t WHERE o_totalprice > 10",
            "SELECT o_orderkey FROM orders WHERE o_totalprice > 10"),
        pair("projection pruned subquery",
            "SELECT o_orderkey FROM (SELECT o_orderkey, o_custkey, o_comment FROM orders) t",
            "SELECT o_orderkey FROM orders"),
        pair("star vs column list", "SELECT * FROM nation", "SELECT n_nationkey, n_name, n_regionkey, n_comment FROM nation"),
        pair("group by ordinal", "SELECT o_custkey, count(*) AS n FROM orders GROUP BY 1", "SELECT o_custkey, count(*) AS n FROM orders GROUP BY o_custkey"),
        pair("order by ordinal", "SELECT n_name FROM nation ORDER BY 1 LIMIT 3", "SELECT n_name FROM nation ORDER BY n_name LIMIT 3"),
        pair("inner join input order",
            "SELECT c_name, n_name FROM customer JOIN nation ON c_nationkey = n_nationkey",
            "SELECT c_name, n_name FROM nation JOIN customer ON n_nationkey = c_nationkey"),
        pair("join key sides", "SELECT c_name, n_name FROM customer JOIN nation ON c_nationkey = n_nationkey", "SELECT c_name, n_name FROM customer JOIN nation ON n_nationkey = c_nationkey"),
        pair("right join as left join",
            "SELECT c_custkey, o_orderkey FROM orders RIGHT JOIN customer ON c_custkey = o_custkey",
            "SELECT c_custkey, o_orderkey FROM customer LEFT JOIN orders ON c_custkey = o_custkey"),
        pair("redundant parentheses", "SELECT n_name FROM nation WHERE ((n_regionkey = 1)) AND (n_nationkey > 3)", "SELECT n_name FROM nation WHERE n_regionkey = 1 AND n_nationkey > 3"),
        pair("between vs range", tpch::Q6, &tpch::Q6.replace("l_discount BETWEEN 0.05 AND 0.07", "l_discount >= 0.05 AND l_discount <= 0.07")),
        pair("q13 alias", tpch::Q13, &tpch::Q13.replace("c_orders", "per_customer")),
        pair("q18 reformatted with aliases", tpch::Q18, "
            select c.c_name, c.c_custkey, o.o_orderkey, o.o_orderdate, o.o_totalprice, sum(l.l_quantity) as total_qty
            from customer c join orders o on c.c_custkey = o.o_custkey join lineitem l on o.o_orderkey = l.l_orderkey
            where o.o_orderkey in (select big.l_orderkey from lineitem big group by big.l_orderkey having sum(big.l_quantity) > 300)
            group by c.c_name, c.c_custkey, o.o_orderkey, o.o_orderdate, o.o_totalprice
            order by o.o_totalprice desc, o.o_orderdate limit 100"),
        pair("q12 in-list spacing", tpch::Q12, &tpch::Q12.replace("('MAIL', 'SHIP')", "('MAIL','SHIP')")),
        pair("q22 cte", tpch::Q22, "
            WITH custsale AS (
              SELECT substring(c_phone FROM 1 FOR 2) AS cntrycode, c_acctbal
              FROM customer
              WHERE substring(c_phone FROM 1 FOR 2) IN ('13', '31', '23', '29', '30', '18', '17')
                AND c_acctbal > (SELECT avg(c_acctbal) FROM customer
                                 WHERE c_acctbal > 0.00
                                   AND substring(c_phone FROM 1 FOR 2) IN ('13', '31', '23', '29', '30', '18', '17'))
                AND NOT EXISTS (SELECT * FROM orders WHERE o_custkey = c_custkey))
            SELECT cntrycode, count(*) AS numcust, sum(c_acctbal) AS totacctbal FROM custsale
            GROUP BY cntrycode ORDER BY cntrycode"),
        pair("q4 exists alias", tpch::Q4, &tpch::Q4.replace("SELECT * FROM lineitem WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate", "SELECT 1 FROM lineitem li WHERE li.l_orderkey = o_orderkey AND li.l_commitdate < li.l_receiptdate")),
        pair("self join aliases",
            "SELECT a.n_name, b.n_name AS other FROM nation a JOIN nation b ON a.n_regionkey = b.n_regionkey",
            "SELECT x.n_name, y.n_name AS other FROM nation x JOIN nation y ON x.n_regionkey = y.n_regionkey"),
        pair("union inputs alias", "SELECT n_name AS name FROM nation UNION ALL SELECT r_name FROM region", "SELECT n.n_name AS name FROM nation n UNION ALL SELECT r.r_name FROM region r"),
    ]
}

fn different_pairs() -> Vec<Pair> {
    vec![
        pair("q1 interval", tpch::Q1, &tpch::Q1.replace("'90' DAY", "'60' DAY")),
        pair("q3 segment constant", tpch::Q3, &tpch::Q3.replace("'BUILDING'", "'MACHINERY'")),
        pair("q3 limit", tpch::Q3, &tpch::Q3.replace("LIMIT 10", "LIMIT 20")),
        pair("q3 order direction", tpch::Q3, &tpch::Q3.replace("revenue DESC", "revenue ASC")),
        pair("q6 comparison", tpch::Q6, &tpch::Q6.replace("l_quantity < 24", "l_quantity <= 24")),
        pair(
            "q6 expression",
            tpch::Q6,
            &tpch::Q6.replace("l_extendedprice * l_discount", "l_extendedprice * (1 - l_discount)"),
        ),
        pair(
            "q10 extra column",
            tpch::Q10,
            &tpch::Q10
                .replace("c_acctbal, n_name, c_address", "c_acctbal, n_name, n_regionkey, c_address")
                .replace("n_name, c_address, c_comment", "n_name, n_regionkey, c_address, c_comment"),
        ),
        pair("q12 in-list", tpch::Q12, &tpch::Q12.replace("('MAIL', 'SHIP')", "('MAIL', 'AIR')")),
        pair("q13 join type", tpch::Q13, &tpch::Q13.replace("LEFT OUTER JOIN", "JOIN")),
        pair("q13 like pattern", tpch::Q13, &tpch::Q13.replace("%special%requests%", "%special%")),
        pair("q18 having threshold", tpch::Q18, &tpch::Q18.replace("> 300", "> 312")),
        pair("q22 not exists", tpch::Q22, &tpch::Q22.replace("NOT EXISTS", "EXISTS")),
        pair(
            "q4 exists predicate",
            tpch::Q4,
            &tpch::Q4.replace("l_commitdate < l_receiptdate", "l_commitdate > l_receiptdate"),
        ),
        pair(
            "aggregate function",
            "SELECT o_custkey, sum(o_totalprice) AS v FROM orders GROUP BY o_custkey",
            "SELECT o_custkey, avg(o_totalprice) AS v FROM orders GROUP BY o_custkey",
        ),
        pair(
            "grouping",
            "SELECT o_custkey, sum(o_totalprice) AS v FROM orders GROUP BY o_custkey",
            "SELECT o_custkey, sum(o_totalprice) AS v FROM orders GROUP BY o_custkey, o_orderstatus",
        ),
        pair(
            "count distinct",
            "SELECT count(o_custkey) AS n FROM orders",
            "SELECT count(DISTINCT o_custkey) AS n FROM orders",
        ),
        pair("distinct", "SELECT o_custkey FROM orders", "SELECT DISTINCT o_custkey FROM orders"),
        pair("scalar function", "SELECT upper(n_name) AS n FROM nation", "SELECT lower(n_name) AS n FROM nation"),
        pair(
            "kiln function",
            "SELECT kiln_sha256_hex(c_name) AS h FROM customer",
            "SELECT kiln_pii_hash(c_name, 'pii_key') AS h FROM customer",
        ),
        pair("source table", "SELECT n_name AS name FROM nation", "SELECT r_name AS name FROM region"),
        pair("projected column", "SELECT c_name FROM customer", "SELECT c_address AS c_name FROM customer"),
        pair("output name", "SELECT c_name FROM customer", "SELECT c_name AS customer_name FROM customer"),
        pair("output order", "SELECT c_name, c_phone FROM customer", "SELECT c_phone, c_name FROM customer"),
        pair("literal type", "SELECT o_totalprice * 2 AS v FROM orders", "SELECT o_totalprice * 2.0 AS v FROM orders"),
        pair(
            "join key column",
            "SELECT c_name, n_name FROM customer JOIN nation ON c_nationkey = n_nationkey",
            "SELECT c_name, n_name FROM customer JOIN nation ON c_nationkey = n_regionkey",
        ),
        pair(
            "left vs full join",
            "SELECT c_custkey, o_orderkey FROM customer LEFT JOIN orders ON c_custkey = o_custkey",
            "SELECT c_custkey, o_orderkey FROM customer FULL JOIN orders ON c_custkey = o_custkey",
        ),
        pair(
            "left join sides",
            "SELECT c_custkey, o_orderkey FROM customer LEFT JOIN orders ON c_custkey = o_custkey",
            "SELECT c_custkey, o_orderkey FROM orders LEFT JOIN customer ON c_custkey = o_custkey",
        ),
        pair(
            "self join roles",
            "SELECT a.n_name, b.n_name AS other FROM nation a JOIN nation b ON a.n_regionkey = b.n_nationkey",
            "SELECT a.n_name, b.n_name AS other FROM nation a JOIN nation b ON a.n_nationkey = b.n_regionkey",
        ),
        pair(
            "union vs union all",
            "SELECT n_name AS name FROM nation UNION ALL SELECT r_name FROM region",
            "SELECT n_name AS name FROM nation UNION SELECT r_name FROM region",
        ),
        pair(
            "case branch",
            "SELECT CASE WHEN o_totalprice > 100 THEN 'big' ELSE 'small' END AS size FROM orders",
            "SELECT CASE WHEN o_totalprice > 100 THEN 'large' ELSE 'small' END AS size FROM orders",
        ),
        pair(
            "window partition",
            "SELECT o_orderkey, row_number() OVER (PARTITION BY o_custkey ORDER BY o_orderdate) AS rn FROM orders",
            "SELECT o_orderkey, row_number() OVER (PARTITION BY o_orderstatus ORDER BY o_orderdate) AS rn FROM orders",
        ),
        pair(
            "window nulls order",
            "SELECT o_orderkey, rank() OVER (ORDER BY o_orderdate NULLS FIRST) AS r FROM orders",
            "SELECT o_orderkey, rank() OVER (ORDER BY o_orderdate NULLS LAST) AS r FROM orders",
        ),
        pair(
            "offset",
            "SELECT n_name FROM nation ORDER BY n_name LIMIT 5",
            "SELECT n_name FROM nation ORDER BY n_name LIMIT 5 OFFSET 1",
        ),
        pair(
            "is null",
            "SELECT c_name FROM customer WHERE c_comment IS NULL",
            "SELECT c_name FROM customer WHERE c_comment IS NOT NULL",
        ),
    ]
}

#[tokio::test]
async fn equivalent_pairs_share_a_fingerprint() {
    let mut t = Tpch::new();
    let mut failures = Vec::new();
    let pairs = same_pairs();
    assert!(pairs.len() >= 25, "corpus too small");
    for p in pairs {
        let (a, b) = (t.compile(&p.a).await.unwrap(), t.compile(&p.b).await.unwrap());
        if a.query_fp != b.query_fp {
            failures.push(format!("{}:\n{}\n---\n{}", p.name, a.canonical.encode(), b.canonical.encode()));
        }
    }
    assert!(failures.is_empty(), "equivalent pairs with different query_fp:\n{}", failures.join("\n=====\n"));
}

#[tokio::test]
async fn different_pairs_differ() {
    let mut t = Tpch::new();
    let mut failures = Vec::new();
    let pairs = different_pairs();
    assert!(pairs.len() >= 25, "corpus too small");
    for p in pairs {
        let (a, b) = (t.query_fp(&p.a).await, t.query_fp(&p.b).await);
        if a == b {
            failures.push(p.name);
        }
    }
    assert!(failures.is_empty(), "different queries with the same query_fp: {failures:?}");
}

#[test]
fn corpus_has_forty_pairs_with_tpch_among_them() {
    let all: Vec<Pair> = same_pairs().into_iter().chain(different_pairs()).collect();
    assert!(all.len() >= 40, "{} pairs", all.len());
    let tpch_pairs = all.iter().filter(|p| tpch::ALL.iter().any(|(_, q)| p.a == *q)).count();
    assert!(tpch_pairs >= 15, "{tpch_pairs} TPC-H pairs");
}

#[tokio::test]
async fn every_tpch_query_has_a_distinct_fingerprint() {
    let mut t = Tpch::new();
    let mut seen = std::collections::BTreeMap::new();
    for (name, q) in tpch::ALL {
        let fp = t.query_fp(q).await;
        assert!(seen.insert(fp, name).is_none(), "{name} collides");
    }
}

/// The canonical encoding is versioned: this pins it. If it changes on purpose, bump
/// CANONICAL_PLAN_VERSION (every build id changes) and update the text and hash here.
#[tokio::test]
async fn canonical_encoding_is_pinned() {
    let mut t = Tpch::new();
    let p = t
        .compile("SELECT n.n_name, count(*) AS customers FROM customer c JOIN nation n ON c.c_nationkey = n.n_nationkey WHERE c.c_acctbal > 0 GROUP BY n.n_name")
        .await
        .unwrap();
    let expected = "\
kiln.query.v1
Output
  column: n_name := nation.n_name
  column: customers := count(Int64(1))
  Aggregate
    group: nation.n_name
    aggregate: count(Int64(1))
    Join
      type: Inner
      on: customer.c_nationkey = nation.n_nationkey
      Filter
        predicate: customer.c_acctbal > Decimal128(0.00,15,2)
        TableScan
          table: customer
          column: c_acctbal
          column: c_nationkey
          filter: customer.c_acctbal > Decimal128(0.00,15,2)
      TableScan
        table: nation
        column: n_name
        column: n_nationkey
";
    assert_eq!(p.canonical.encode(), expected);
    assert_eq!(p.query_fp, kiln_artifact::plan::sha256_hex(expected.as_bytes()));
}

/// sha256 of `text`, computed here with sha2 directly (not through Kiln's helpers).
fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The build-id encoding is versioned; this pins it against the documented text.
#[test]
fn build_id_encoding_is_pinned() {
    let fps = kiln_artifact::BuildFingerprints {
        schema_fp: "s".into(),
        query_fp: "q".into(),
        runtime_fp: "r".into(),
        func_fp: "f".into(),
        upstream: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into_iter().collect(),
    };
    assert_eq!(
        kiln_artifact::identity::build_id("p", &fps),
        sha256("kiln.build.v1\np\ns\nq\nr\nf\nupstream a 1\nupstream b 2\n")
    );
}

/// The runtime fingerprint encoding is versioned; this pins it against the documented text.
#[test]
fn runtime_fp_encoding_is_pinned() {
    let semantic = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "x=y".to_owned())].into_iter().collect();
    assert_eq!(kiln_artifact::identity::runtime_fp(&semantic), sha256("kiln.runtime.v1\na=x=y\nb=2\n"));
}

/// The canonical text of literals and casts of every type a product's SQL can produce,
/// pinned: a change to how any of them is written changes `query_fp` for every product
/// using it, so it must be a deliberate, versioned change (CANONICAL_PLAN_VERSION).
#[tokio::test]
async fn values_and_types_are_pinned() {
    // Planned and analyzed directly: TIME and intervals are plannable but cannot be
    // stored in a Delta table, so no product compiles with them.
    let t = Tpch::new();
    let sql = "SELECT 1 AS i, CAST(2 AS TINYINT) AS i8, CAST(3 AS SMALLINT) AS i16, CAST(4 AS INT) AS i32, \
             CAST(5 AS INT UNSIGNED) AS u32, 1.5 AS f, CAST(2.5 AS REAL) AS f32, 1.25e300 AS big, \
             CAST(12.34 AS DECIMAL(10, 2)) AS d, 'it''s' AS s, CAST('v' AS VARCHAR) AS v, true AS b, \
             DATE '2024-01-05' AS dt, TIMESTAMP '2024-01-05 10:00:00.123' AS ts, \
             CAST('2024-01-05T10:00:00Z' AS TIMESTAMP WITH TIME ZONE) AS tz, TIME '10:00:00' AS tm, \
             INTERVAL '1 day 2 hours' AS iv, INTERVAL '3' MONTH AS im, X'01FF' AS bin, \
             CAST(NULL AS BIGINT) AS n, make_array(1, 2) AS l, named_struct('k', 1, 'w', 'x') AS st, \
             CAST(c_acctbal AS DOUBLE) AS c1, CAST(c_custkey AS VARCHAR) AS c2, \
             TRY_CAST(c_phone AS DATE) AS c3, CAST(c_custkey AS TIMESTAMP) AS c4 FROM customer";
    let plan = t.substrate.plan_sql(kiln_control::surface::Surface::Internal, sql).await.unwrap();
    let plan = t.substrate.context().state().optimize(&plan).unwrap();
    let encoded = kiln_control::canonical::analyze(&plan).plan.encode();
    let exprs: Vec<&str> = encoded.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();
    let expected = [
        "Binary(\"1,255\")",
        "Boolean(true)",
        "CAST(CAST(customer.c_custkey AS Timestamp(s)) AS Timestamp(ns))",
        "CAST(customer.c_acctbal AS Float64)",
        "CAST(customer.c_custkey AS Utf8View)",
        "Date32(\"2024-01-05\")",
        "Decimal128(12.34,10,2)",
        "Float32(2.5)",
        "Float64(1.5)",
        &format!("Float64(125{})", "0".repeat(298)),
        "Int16(3)",
        "Int32(4)",
        "Int64(1)",
        "Int64(NULL)",
        "Int8(2)",
        "IntervalMonthDayNano(\"IntervalMonthDayNano { months: 0, days: 1, nanoseconds: 7200000000000 }\")",
        "IntervalMonthDayNano(\"IntervalMonthDayNano { months: 3, days: 0, nanoseconds: 0 }\")",
        "List([1, 2])",
        "Struct({k:1,w:x})",
        "TRY_CAST(customer.c_phone AS Date32)",
        "Time64Nanosecond(\"36000000000000\")",
        "TimestampNanosecond(1704448800000000000, None)",
        "TimestampNanosecond(1704448800123000000, None)",
        "UInt32(5)",
        "Utf8(\"it's\")",
        "Utf8View(\"v\")",
    ];
    assert_eq!(exprs, expected, "\n{encoded}");
}
