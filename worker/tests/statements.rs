//! Every SQL statement the runtime can issue is valid against the schema it migrates: Postgres
//! parses and analyzes each one (tables, columns, functions, parameter types) without running
//! it. A mistyped placeholder, table or column fails here, not in front of a user.

mod common;

#[tokio::test]
async fn postgres_prepares_every_statement() {
    let url = common::fresh_database("statements").await;
    let config = common::config(&url, "statements");
    mainstay::migrate(&config).await.expect("migrate");
    match mainstay::__private::prepare_every_statement(&config).await {
        Ok(n) => {
            eprintln!("Postgres prepared all {n} statements");
            assert!(n >= 60, "only {n} statements rendered: the catalog of statements is incomplete");
        }
        Err(failures) => panic!("{} statement(s) Postgres refuses:\n\n{}", failures.len(), failures.join("\n\n")),
    }
}
