#[mainstay::transaction(isolation = "snapshot")]
async fn insert(conn: &mut mainstay::sqlx::PgConnection) -> mainstay::Result<()> {
    let _ = conn;
    Ok(())
}

fn main() {}
