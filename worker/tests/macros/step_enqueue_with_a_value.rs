#[mainstay::step(enqueue = true)]
async fn charge() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
