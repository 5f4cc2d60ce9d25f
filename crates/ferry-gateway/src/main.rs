fn main() {
    println!("ferry-gateway {}", env!("CARGO_PKG_VERSION"));
}
