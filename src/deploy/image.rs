//! What a server image archive is built for, read before it is pushed.
//!
//! `nix build .#server-image` writes a docker-archive (a tar, gzipped by
//! `dockerTools.buildLayeredImage`): `manifest.json` names the image's config
//! file, whose `architecture` says which CPU the binary inside runs on. An
//! amd64 image on an ARM64 task (or the reverse) crash-loops with "exec
//! format error", so the deploy tool compares it with `CpuArchitecture`
//! before anything is pushed. The layers' file names are read too: with
//! `--certificates image` the server's certificates must be baked in.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::Path;

/// Why an archive's architecture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a docker-archive: {why}")]
    NotAnArchive { path: String, why: String },
}

/// Files larger than this are layers, never the manifest or the config.
const METADATA_LIMIT: u64 = 4 << 20;

/// What a docker-archive holds, as far as the deploy tool asks.
#[derive(Debug)]
pub struct Inventory {
    /// The image's `architecture` (`amd64`, `arm64`…).
    pub architecture: String,
    /// Every path in every layer (`./` removed).
    pub files: BTreeSet<String>,
}

impl Inventory {
    /// Whether a layer holds `path` (relative to `/`), directly or under a
    /// store path that the image links there.
    pub fn has(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == path || f.ends_with(&format!("/{path}")))
    }
}

/// The `architecture` of the image in a docker-archive (`amd64`, `arm64`…).
pub fn architecture(path: &Path) -> Result<String, ImageError> {
    inventory(path).map(|i| i.architecture)
}

/// The architecture and the layers' file names of a docker-archive.
pub fn inventory(path: &Path) -> Result<Inventory, ImageError> {
    let shown = path.display().to_string();
    let io = |source| ImageError::Io { path: shown.clone(), source };
    let not = |why: String| ImageError::NotAnArchive { path: shown.clone(), why };
    let mut file = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut magic = [0u8; 2];
    let gzipped = {
        use std::io::BufRead;
        let head = file.fill_buf().map_err(io)?;
        magic.iter_mut().zip(head).for_each(|(m, h)| *m = *h);
        magic == [0x1f, 0x8b]
    };
    let read = if gzipped { read_archive(flate2::read::MultiGzDecoder::new(file)) } else { read_archive(file) };
    let (files, layer_files) = read.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
            not(format!("not a tar archive ({e})"))
        }
        _ => io(e),
    })?;
    let manifest = files.get("manifest.json").ok_or_else(|| not("no manifest.json".into()))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| not(format!("manifest.json: {e}")))?;
    let config = manifest[0]["Config"].as_str().ok_or_else(|| not("manifest.json names no Config".into()))?;
    let config = files.get(config).ok_or_else(|| not(format!("no {config}, which manifest.json names")))?;
    let config: serde_json::Value = serde_json::from_slice(config).map_err(|e| not(format!("image config: {e}")))?;
    let architecture = config["architecture"].as_str().map(str::to_owned);
    let architecture = architecture.ok_or_else(|| not("the image config has no architecture".into()))?;
    Ok(Inventory { architecture, files: layer_files })
}

/// The docker architecture an ECS `CpuArchitecture` runs.
pub fn docker_architecture(cpu_architecture: &str) -> Option<&'static str> {
    match cpu_architecture {
        "ARM64" => Some("arm64"),
        "X86_64" => Some("amd64"),
        _ => None,
    }
}

/// Every regular file of a tar stream that ends in `.json` and is small,
/// by name (`./` prefix removed), and the names inside each layer (a file
/// ending in `.tar`). Understands ustar prefixes and the GNU and pax
/// long-name records; everything else is skipped.
type Archive = (BTreeMap<String, Vec<u8>>, BTreeSet<String>);

fn read_archive(mut tar: impl Read) -> std::io::Result<Archive> {
    let (mut files, mut layer_files) = (BTreeMap::new(), BTreeSet::new());
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut tar, &mut header)? || header.iter().all(|b| *b == 0) {
            return Ok((files, layer_files));
        }
        let size = octal(&header[124..136])
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "a tar header with a bad size"))?;
        let kind = header[156];
        if matches!(kind, b'0' | 0) && long_name.clone().unwrap_or_else(|| header_name(&header)).ends_with(".tar") {
            long_name = None;
            let mut layer = (&mut tar).take(size);
            // A layer that is not a plain tar (compressed, say) adds no names.
            layer_files.extend(names(&mut layer).unwrap_or_default());
            std::io::copy(&mut layer, &mut std::io::sink())?;
            skip(&mut tar, padding(size))?;
            continue;
        }
        let wanted = matches!(kind, b'0' | 0 | b'L' | b'x') && size <= METADATA_LIMIT;
        let data = if wanted { Some(read_exact_vec(&mut tar, size)?) } else { None };
        skip(&mut tar, if wanted { padding(size) } else { size + padding(size) })?;
        let Some(data) = data else {
            long_name = None;
            continue;
        };
        match kind {
            b'L' => long_name = Some(text(&data)),
            b'x' => long_name = pax_path(&data).or(long_name),
            _ => {
                let name = long_name.take().unwrap_or_else(|| header_name(&header));
                let name = name.trim_start_matches("./").to_owned();
                if name.ends_with(".json") {
                    files.insert(name, data);
                }
            }
        }
    }
}

/// The entry names of a (layer) tar stream, read up to its end marker.
fn names(tar: &mut impl Read) -> std::io::Result<Vec<String>> {
    let (mut found, mut long_name, mut header) = (Vec::new(), None::<String>, [0u8; 512]);
    while read_block(tar, &mut header)? && header.iter().any(|b| *b != 0) {
        let size = octal(&header[124..136])
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "a layer header with a bad size"))?;
        match header[156] {
            kind @ (b'L' | b'x') if size <= METADATA_LIMIT => {
                let data = read_exact_vec(tar, size)?;
                skip(tar, padding(size))?;
                long_name = if kind == b'L' { Some(text(&data)) } else { pax_path(&data).or(long_name) };
            }
            _ => {
                let name = long_name.take().unwrap_or_else(|| header_name(&header));
                found.push(name.trim_start_matches("./").trim_end_matches('/').to_owned());
                skip(tar, size + padding(size))?;
            }
        }
    }
    Ok(found)
}

fn read_block(tar: &mut impl Read, block: &mut [u8; 512]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match tar.read(&mut block[filled..])? {
            0 if filled == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(true)
}

fn read_exact_vec(tar: &mut impl Read, size: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(size as usize);
    tar.take(size).read_to_end(&mut data)?;
    if data.len() as u64 != size {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(data)
}

fn skip(tar: &mut impl Read, count: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut tar.take(count), &mut std::io::sink())?;
    if copied != count {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

fn octal(field: &[u8]) -> Option<u64> {
    let digits = text(field);
    let digits = digits.trim();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn header_name(header: &[u8; 512]) -> String {
    let name = text(&header[0..100]);
    let prefix = if &header[257..262] == b"ustar" { text(&header[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
}

/// The `path` record of a pax extended header ("LEN path=NAME\n").
fn pax_path(data: &[u8]) -> Option<String> {
    text(data).lines().find_map(|line| line.split_once(' ')?.1.strip_prefix("path=").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        header[156] = b'0';
        let mut out = header.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    fn archive(architecture: &str, gzip: bool) -> tempfile::NamedTempFile {
        archive_with(architecture, gzip, &[])
    }

    fn archive_with(architecture: &str, gzip: bool, layer_files: &[&str]) -> tempfile::NamedTempFile {
        let mut layer: Vec<u8> = layer_files.iter().flat_map(|name| entry(name, b"pem")).collect();
        layer.extend([0u8; 1024]);
        layer.extend(vec![7u8; 3000]);
        let mut tar = entry("./layer/layer.tar", &layer);
        tar.extend(entry("manifest.json", br#"[{"Config":"abc.json","Layers":["layer/layer.tar"]}]"#));
        tar.extend(entry("abc.json", format!(r#"{{"architecture":"{architecture}","os":"linux"}}"#).as_bytes()));
        tar.extend([0u8; 1024]);
        let file = tempfile::NamedTempFile::new().unwrap();
        if gzip {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
            encoder.write_all(&tar).unwrap();
            encoder.finish().unwrap();
        } else {
            std::fs::write(file.path(), tar).unwrap();
        }
        file
    }

    #[test]
    fn reads_the_architecture_of_plain_and_gzipped_archives() {
        for (arch, gzip) in [("arm64", true), ("amd64", false), ("amd64", true)] {
            assert_eq!(architecture(archive(arch, gzip).path()).unwrap(), arch);
        }
    }

    #[test]
    fn reads_the_names_in_the_layers() {
        let baked =
            ["./nix/store/abc-fluidity-image-certs/etc/fluidity/certs/server.key", "./etc/fluidity/certs/ca.crt"];
        for gzip in [true, false] {
            let found = inventory(archive_with("arm64", gzip, &baked).path()).unwrap();
            assert_eq!(found.architecture, "arm64");
            assert!(found.has("etc/fluidity/certs/server.key") && found.has("etc/fluidity/certs/ca.crt"), "{found:?}");
            assert!(!found.has("etc/fluidity/certs/server.crt"), "{found:?}");
        }
        assert!(inventory(archive("arm64", true).path()).unwrap().files.is_empty());
    }

    #[test]
    fn something_else_is_not_an_archive() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"an image archive, as nix build writes it").unwrap();
        let error = architecture(file.path()).unwrap_err().to_string();
        assert!(error.contains("is not a docker-archive"), "{error}");
    }

    #[test]
    fn ecs_architectures_map_to_docker_names() {
        assert_eq!(docker_architecture("ARM64"), Some("arm64"));
        assert_eq!(docker_architecture("X86_64"), Some("amd64"));
        assert_eq!(docker_architecture("MIPS"), None);
    }
}
