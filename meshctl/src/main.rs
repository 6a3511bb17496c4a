//! `meshctl`: the operator CLI.
fn main() {}
