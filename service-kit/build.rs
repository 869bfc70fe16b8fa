//! Rebuilds when a migration is added or edited: `sqlx::migrate!` embeds schemas/migrations at
//! compile time, but cargo only watches this crate's sources, so without this a new migration
//! would silently be missing from the binaries (sqlx's documentation asks for this line).
fn main() {
    println!("cargo:rerun-if-changed=../schemas/migrations");
}
