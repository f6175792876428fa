#[mainstay::step(max_attempt = 3)]
async fn charge() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
