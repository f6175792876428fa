#[mainstay::scheduled]
async fn nightly(at: mainstay::chrono::DateTime<mainstay::chrono::Utc>, context: ()) -> mainstay::Result<()> {
    let _ = (at, context);
    Ok(())
}

fn main() {}
