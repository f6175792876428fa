#[mainstay::transaction]
async fn insert() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
