#[mainstay::step(max_attempts = 0)]
async fn charge() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
