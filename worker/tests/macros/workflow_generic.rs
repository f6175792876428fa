#[mainstay::workflow]
async fn checkout<T: serde::Serialize>(item: T) -> mainstay::Result<()> {
    let _ = item;
    Ok(())
}

fn main() {}
