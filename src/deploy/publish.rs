//! Publishing what the stacks run: the Lambda package to an S3 bucket under a
//! content-hash key, and the server image to an ECR repository under a
//! content-hash tag, so a changed artifact always changes a stack parameter
//! and rolls out, and an unchanged one is not uploaded again.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{ImageIdentifier, ImageScanningConfiguration, ImageTagMutability};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration};
use sha2::{Digest, Sha256};

use super::aws::{Clients, describe};

/// Hex SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The artifact bucket's name: one per environment, account and region
/// (bucket names are global).
pub fn bucket_name(env: &str, account: &str, region: &str) -> String {
    format!("fluidity-{env}-artifacts-{account}-{region}")
}

/// The S3 key of a Lambda package with this content hash.
pub fn code_key(sha256: &str) -> String {
    format!("lambda/{sha256}.zip")
}

/// The image tag for an image archive with this content hash.
pub fn image_tag(sha256: &str) -> String {
    sha256[..16.min(sha256.len())].to_owned()
}

/// The account the credentials belong to.
pub async fn account_id(clients: &Clients) -> anyhow::Result<String> {
    let identity = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
        .context("cannot identify the AWS account (are credentials configured? try --profile)")?;
    identity.account().map(str::to_owned).context("STS returned no account id")
}

/// Creates the bucket if it does not exist: private (all public access
/// blocked). Returns whether it was created.
pub async fn ensure_bucket(clients: &Clients, bucket: &str) -> anyhow::Result<bool> {
    match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(e) => bail!("cannot use bucket {bucket}: {} (it may belong to another account)", describe(&e)),
    }
    let mut create = clients.s3.create_bucket().bucket(bucket);
    if clients.region != "us-east-1" {
        let constraint = BucketLocationConstraint::from(clients.region.as_str());
        create = create
            .create_bucket_configuration(CreateBucketConfiguration::builder().location_constraint(constraint).build());
    }
    create.send().await.map_err(|e| anyhow::anyhow!("cannot create bucket {bucket}: {}", describe(&e)))?;
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    clients
        .s3
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(block)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot block public access on {bucket}: {}", describe(&e)))?;
    Ok(true)
}

/// Removes Lambda packages other than `keep` (the one just deployed and the
/// one before it, which a rollback would need) from the bucket. Returns how
/// many went. Done by the tool, not a lifecycle rule: a rule counts from the
/// upload and would delete a package still in use.
pub async fn prune_packages(clients: &Clients, bucket: &str, keep: &[&str]) -> anyhow::Result<usize> {
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("lambda/")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list s3://{bucket}/lambda/: {}", describe(&e)))?;
    let mut removed = 0;
    for key in listed.contents().iter().filter_map(|o| o.key()).filter(|k| !keep.contains(k)) {
        delete_object(clients, bucket, key).await?;
        removed += 1;
    }
    Ok(removed)
}

async fn delete_object(clients: &Clients, bucket: &str, key: &str) -> anyhow::Result<()> {
    let deleted = clients.s3.delete_object().bucket(bucket).key(key).send().await;
    deleted.map_err(|e| anyhow::anyhow!("cannot remove s3://{bucket}/{key}: {}", describe(&e)))?;
    Ok(())
}

/// Empties and deletes the artifact bucket (`delete --purge`). Whether it existed.
pub async fn delete_bucket(clients: &Clients, bucket: &str) -> anyhow::Result<bool> {
    match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(false),
        Err(e) => bail!("cannot use bucket {bucket}: {}", describe(&e)),
    }
    let mut token = None;
    loop {
        let listed = clients
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list s3://{bucket}: {}", describe(&e)))?;
        for key in listed.contents().iter().filter_map(|o| o.key()) {
            delete_object(clients, bucket, key).await?;
        }
        token = listed.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    clients
        .s3
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete bucket {bucket}: {}", describe(&e)))?;
    Ok(true)
}

/// Deletes the image repository with its images (`delete --purge`). Whether it existed.
pub async fn delete_repository(clients: &Clients, name: &str) -> anyhow::Result<bool> {
    match clients.ecr.delete_repository().repository_name(name).force(true).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(false),
        Err(e) => bail!("cannot delete image repository {name}: {}", describe(&e)),
    }
}

/// Images kept in the repository (the newest; the running one is among them).
pub const IMAGES_KEPT: i32 = 10;

/// Only the newest images stay in the repository (set on every deploy).
pub async fn expire_old_images(clients: &Clients, repository: &str) -> anyhow::Result<()> {
    let policy = serde_json::json!({ "rules": [{
        "rulePriority": 1,
        "description": format!("keep the newest {IMAGES_KEPT} images"),
        "selection": { "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": IMAGES_KEPT },
        "action": { "type": "expire" }
    }]});
    clients
        .ecr
        .put_lifecycle_policy()
        .repository_name(repository)
        .lifecycle_policy_text(policy.to_string())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot set the lifecycle policy of {repository}: {}", describe(&e)))?;
    Ok(())
}

/// Uploads `path` to `bucket`/`key` unless an object is already there (the key
/// names the content). Returns whether it uploaded.
pub async fn upload(clients: &Clients, bucket: &str, key: &str, path: &Path) -> anyhow::Result<bool> {
    match clients.s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(e) => bail!("cannot check s3://{bucket}/{key}: {}", describe(&e)),
    }
    let body = ByteStream::from_path(path).await.with_context(|| format!("cannot read {}", path.display()))?;
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .content_type("application/zip")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot upload s3://{bucket}/{key}: {}", describe(&e)))?;
    Ok(true)
}

/// Creates the image repository if missing (immutable tags, scan on push)
/// and returns its URI.
pub async fn ensure_repository(clients: &Clients, name: &str) -> anyhow::Result<(String, bool)> {
    match clients.ecr.describe_repositories().repository_names(name).send().await {
        Ok(found) => {
            if let Some(uri) = found.repositories().first().and_then(|r| r.repository_uri()) {
                return Ok((uri.to_owned(), false));
            }
        }
        Err(e) if e.code() == Some("RepositoryNotFoundException") => {}
        Err(e) => bail!("cannot look up image repository {name}: {}", describe(&e)),
    }
    let created = clients
        .ecr
        .create_repository()
        .repository_name(name)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(true).build())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot create image repository {name}: {}", describe(&e)))?;
    let uri = created.repository().and_then(|r| r.repository_uri()).context("ECR returned no repository URI")?;
    Ok((uri.to_owned(), true))
}

/// Whether the repository already holds an image with this tag.
pub async fn image_exists(clients: &Clients, repository: &str, tag: &str) -> anyhow::Result<bool> {
    let id = ImageIdentifier::builder().image_tag(tag).build();
    match clients.ecr.describe_images().repository_name(repository).image_ids(id).send().await {
        Ok(found) => Ok(!found.image_details().is_empty()),
        Err(e) if e.code() == Some("ImageNotFoundException") => Ok(false),
        Err(e) => bail!("cannot look up image {repository}:{tag}: {}", describe(&e)),
    }
}

/// Pushes a docker-archive image (as `nix build .#server-image` writes it) to
/// `reference` with skopeo. The registry login goes through an auth file
/// readable only by us, removed afterwards; it never appears in a command line.
pub async fn push_image(clients: &Clients, skopeo: &Path, archive: &Path, reference: &str) -> anyhow::Result<()> {
    let token = clients
        .ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot get a registry login from ECR: {}", describe(&e)))?;
    let data = token.authorization_data().first().context("ECR returned no authorization data")?;
    let auth = data.authorization_token().context("ECR returned no authorization token")?;
    let registry = reference.split('/').next().unwrap_or_default();
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let auth_file = dir.path().join("auth.json");
    let json = serde_json::json!({ "auths": { registry: { "auth": auth } } });
    write_private(&auth_file, json.to_string().as_bytes())?;
    let status = tokio::process::Command::new(skopeo)
        .arg("copy")
        // The source is a local archive we built, not a registry whose
        // signatures a policy could check.
        .arg("--insecure-policy")
        .arg("--dest-authfile")
        .arg(&auth_file)
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| {
            format!("cannot run {} (install skopeo, or run through `nix run .#deploy`)", skopeo.display())
        })?;
    if !status.success() {
        bail!("skopeo could not push {reference} ({status})");
    }
    Ok(())
}

/// Writes `bytes` to the new file `path` (never an existing one), mode 0600.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"abc").unwrap();
        let hash = file_sha256(&path).unwrap();
        assert_eq!(hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(code_key(&hash), format!("lambda/{hash}.zip"));
        assert_eq!(image_tag(&hash), "ba7816bf8f01cfea");
        assert_eq!(bucket_name("dev", "123456789012", "eu-west-1"), "fluidity-dev-artifacts-123456789012-eu-west-1");
    }
}
