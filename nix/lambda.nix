# The Lambda deployment package: the static musl control-plane binary as
# `bootstrap` at the zip root (provided.al2023 runs it), zipped with a fixed
# timestamp by the same script the CI contract test uses.
{ pkgs, lib }:
lambda:
pkgs.runCommand "fluidity-lambda-zip"
  {
    nativeBuildInputs = [ pkgs.zip ];
    meta.description = "Fluidity control-plane Lambda package (bootstrap at the zip root)";
  }
  ''
    mkdir -p $out
    bash ${./lambda-zip.sh} ${lib.getExe lambda} $out/fluidity-lambda.zip
  ''
