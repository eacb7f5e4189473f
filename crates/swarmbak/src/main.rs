fn main() {
    println!("swarmbak");
}
