#[mainstay::workflow]
fn checkout() -> mainstay::Result<()> {
    Ok(())
}

fn main() {}
