//! Archives the scanner tests build: tars (with modes), gzip, ZIPs (Java archives).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use palisade_scan::vuln::Database;
use palisade_scan::Options;

/// Scan options with the fixture advisories imported into a database under `dir`.
pub fn options(dir: &Path) -> Options {
    let database = Database::open(dir.join("db"));
    database
        .import(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osv")])
        .expect("import");
    Options {
        database,
        ..Options::default()
    }
}

/// An OCI image layout in a tarball at `path`: one manifest, the config, and layers given as
/// (bytes, media type), bottom first. Blob names are made up (`c0`, `l0`…): tarballs are not
/// checked against digests.
pub fn oci_tarball(path: &Path, config: &str, layers: &[(&[u8], &str)]) -> PathBuf {
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, (bytes, media_type))| serde_json::json!({ "mediaType": media_type, "digest": format!("sha256:l{i}"), "size": bytes.len() }))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c0", "size": config.len() },
        "layers": descriptors,
    })
    .to_string();
    let index =
        serde_json::json!({ "schemaVersion": 2, "manifests": [{ "digest": "sha256:m0", "size": manifest.len() }] })
            .to_string();
    let names: Vec<String> = (0..layers.len()).map(|i| format!("blobs/sha256/l{i}")).collect();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}"),
        ("index.json", index.as_bytes()),
        ("blobs/sha256/m0", manifest.as_bytes()),
        ("blobs/sha256/c0", config.as_bytes()),
    ];
    files.extend(
        names
            .iter()
            .zip(layers)
            .map(|(name, (bytes, _))| (name.as_str(), *bytes)),
    );
    std::fs::write(path, tar_of(&files)).expect("write image");
    path.to_path_buf()
}

pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let with_modes: Vec<(&str, &[u8], u32)> = files.iter().map(|(path, bytes)| (*path, *bytes, 0o644)).collect();
    tar_with_modes(&with_modes)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A tar whose members have modes (executables for Go binaries).
pub fn tar_with_modes(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append_data(&mut header, path, *bytes).expect("append");
    }
    builder.into_inner().expect("tar")
}

pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip");
        writer.write_all(bytes).expect("zip");
    }
    writer.finish().expect("zip").into_inner()
}

/// An ELF object with a `.dep-v0` section holding `json` zlib-compressed, as cargo-auditable
/// embeds a Rust binary's dependency list.
pub fn auditable_elf(json: &str) -> Vec<u8> {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut compressed = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    compressed.write_all(json.as_bytes()).expect("zlib");
    let data = compressed.finish().expect("zlib");
    let mut elf = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = elf.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    elf.append_section_data(text, &[0xc3; 64], 16);
    let section = elf.add_section(Vec::new(), b".dep-v0".to_vec(), SectionKind::ReadOnlyData);
    elf.append_section_data(section, &data, 1);
    elf.write().expect("elf")
}
