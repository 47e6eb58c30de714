//! Compiles proto/dbagent/v1/*.proto with protox, so no system `protoc` is needed, and generates the
//! table of every RPC's access from the `(dbagent.v1.access)` method option.
use protox::prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor};
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto/dbagent/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true).open_files(&files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for the reflection service. Encoded by protox, not prost, so the access options stay in.
    std::fs::write(out.join("dbagent_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    std::fs::write(out.join("method_access.rs"), method_access_table(&compiler.descriptor_pool())?)?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// `pub const METHOD_ACCESS: &[MethodAccess]`, one row per rpc of every service. prost's
/// `MethodOptions` drops extension fields, so the options are read through protox's reflection.
/// An rpc without the option fails the build: its access is never a default.
fn method_access_table(pool: &DescriptorPool) -> Result<String, String> {
    let extension =
        pool.get_extension_by_name("dbagent.v1.access").ok_or("dbagent/v1/access.proto declares no `access` option")?;
    let mut table = String::from("pub const METHOD_ACCESS: &[MethodAccess] = &[\n");
    let mut missing = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            match declared_access(&method.options(), &extension) {
                Some(access) => writeln!(table, "    MethodAccess {{ path: {path:?}, access: Access::{access} }},")
                    .map_err(|e| e.to_string())?,
                None => missing.push(path),
            }
        }
    }
    table.push_str("];\n");
    if !missing.is_empty() {
        return Err(format!(
            "every rpc needs `{{ option (dbagent.v1.access) = ACCESS_READ; }}` or ACCESS_WRITE; missing or unspecified on: {}",
            missing.join(", ")
        ));
    }
    Ok(table)
}

/// The prost variant name of the rpc's declared access; `None` if absent or ACCESS_UNSPECIFIED.
fn declared_access(options: &DynamicMessage, extension: &ExtensionDescriptor) -> Option<&'static str> {
    if !options.has_extension(extension) {
        return None;
    }
    let number = options.get_extension(extension).as_enum_number()?;
    let value = extension.kind().as_enum()?.get_value(number)?;
    match value.name() {
        "ACCESS_READ" => Some("Read"),
        "ACCESS_WRITE" => Some("Write"),
        _ => None,
    }
}
