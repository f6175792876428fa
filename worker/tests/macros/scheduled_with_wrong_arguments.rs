#[mainstay::scheduled("0 3 * * *")]
async fn nightly() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
