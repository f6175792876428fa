struct Shop;

impl Shop {
    #[mainstay::workflow]
    async fn checkout(&self) -> mainstay::Result<()> {
        Ok(())
    }
}

fn main() {}
