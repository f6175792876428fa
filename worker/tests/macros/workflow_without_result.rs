#[mainstay::workflow]
async fn checkout() {}

fn main() {}
