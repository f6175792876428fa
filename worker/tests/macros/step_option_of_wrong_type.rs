#[mainstay::step(max_attempts = "3")]
async fn charge() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
