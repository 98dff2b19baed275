# nixfmt-rs, the one Nix formatter: the crates.io release CI installs
# (tests/setup.sh: cargo install --locked --version 0.5.3 nixfmt_rs), built here
# from the same published .crate, so the flake's `formatter`, the `nix-format`
# check, the devShell and CI run one program at one version. (nixpkgs packages
# an older nixfmt-rs, and the Haskell nixfmt may format differently.)
#
# crane vendors the dependencies by their checksums. They are listed here, as
# "name version checksum" from the crate's own Cargo.lock, because the .crate
# is only fetched at build time: reading its Cargo.lock during evaluation would
# be import-from-derivation. The build uses that Cargo.lock with --locked and
# no network, so a list that disagrees with it fails the build.
{ craneLib, lib }:
let
  version = "0.5.3";
  crate = name: version: checksum: {
    inherit name version checksum;
    source = "registry+https://github.com/rust-lang/crates.io-index";
  };
  fromLine =
    line:
    let
      f = lib.splitString " " line;
    in
    crate (lib.elemAt f 0) (lib.elemAt f 1) (lib.elemAt f 2);
  dependencies = map fromLine [
    "aho-corasick 1.1.4 ddd31a130427c27518df266943a5308ed92d4b226cc639f5a8f1002816174301"
    "alloca 0.4.0 e5a7d05ea6aea7e9e64d25b9156ba2fee3fdd659e34e41063cd2fc7cd020d7f4"
    "anes 0.1.6 4b46cbb362ab8752921c97e041f5e366ee6297bd428a31275b9fcf1e380f7299"
    "anstyle 1.0.14 940b3a0ca603d1eade50a4846a2afffd5ef57a9feac2c0e2ec2e14f9ead76000"
    "autocfg 1.5.0 c08606f8c3cbf4ce6ec8e28fb0014a2c086708fe954eaa885384a6165172e7e8"
    "bitflags 2.11.1 c4512299f36f043ab09a583e57bceb5a5aab7a73db1805848e8fef3c9e8c78b3"
    "bstr 1.12.1 63044e1ae8e69f3b5a92c736ca6269b8d12fa7efe39bf34ddb06d102cf0e2cab"
    "bumpalo 3.20.2 5d20789868f4b01b2f2caec9f5c4e0213b41e3e5702a50157d699ae31ced2fcb"
    "cast 0.3.0 37b2a672a2cb129a2e41c10b1224bb368f9f37a2b16b612598138befd7b37eb5"
    "castaway 0.2.4 dec551ab6e7578819132c713a93c022a05d60159dc86e7a7050223577484c55a"
    "cc 1.2.61 d16d90359e986641506914ba71350897565610e87ce0ad9e6f28569db3dd5c6d"
    "cfg-if 1.0.4 9330f8b2ff13f34540b44e946ef35111825727b38d33286ef986142615121801"
    "ciborium 0.2.2 42e69ffd6f0917f5c029256a24d0161db17cea3997d185db0d35926308770f0e"
    "ciborium-io 0.2.2 05afea1e0a06c9be33d539b876f1ce3692f4afea2cb41f740e7743225ed1c757"
    "ciborium-ll 0.2.2 57663b653d948a338bfb3eeba9bb2fd5fcfaecb9e199e87e1eda4d9e8b240fd9"
    "clap 4.6.1 1ddb117e43bbf7dacf0a4190fef4d345b9bad68dfc649cb349e7d17d28428e51"
    "clap_builder 4.6.0 714a53001bf66416adb0e2ef5ac857140e7dc3a0c48fb28b2f10762fc4b5069f"
    "clap_lex 1.1.0 c8d4a3bb8b1e0c1050499d1815f5ab16d04f0959b233085fb31653fbfc9d98f9"
    "compact_str 0.10.0 79fcda08c33bb58b97008b2cdada6622500e949e060f5913361763121abd2416"
    "console 0.16.3 d64e8af5551369d19cf50138de61f1c42074ab970f74e99be916646777f8fc87"
    "criterion 0.8.2 950046b2aa2492f9a536f5f4f9a3de7b9e2476e575e05bd6c333371add4d98f3"
    "criterion-plot 0.8.2 d8d80a2f4f5b554395e47b5d8305bc3d27813bacb73493eb1001e8f76dae29ea"
    "crossbeam-deque 0.8.6 9dd111b7b7f7d55b72c0a6ae361660ee5853c9af73f70c3c2ef6858b950e2e51"
    "crossbeam-epoch 0.9.18 5b82ac4a3c2ca9c3460964f020e1402edd5753411d7737aa39c3714ad1b5420e"
    "crossbeam-utils 0.8.21 d0a5c400df2834b80a4c3327b3aad3a4c4cd4de0629063962b03235697506a28"
    "crunchy 0.2.4 460fbee9c2c2f33933d720630a6a0bac33ba7053db5344fac858d4b8952d77d5"
    "either 1.15.0 48c757948c5ede0e46177b7add2e67155f70e33c07fea8284df6576da70b3719"
    "encode_unicode 1.0.0 34aa73646ffb006b8f5147f3dc182bd4bcb190227ce861fc4a4844bf8e3cb2c0"
    "errno 0.3.14 39cab71617ae0d63f51a36d69f866391735b51691dbda63cf6f96d042b63efeb"
    "fastrand 2.4.1 9f1f227452a390804cdb637b74a86990f2a7d7ba4b7d5693aac9b4dd6defd8d6"
    "find-msvc-tools 0.1.9 5baebc0774151f905a1a2cc41989300b1e6fbb29aff0ceffa1064fdd3088d582"
    "futures-core 0.3.32 7e3450815272ef58cec6d564423f6e755e25379b217b0bc688e295ba24df6b1d"
    "futures-task 0.3.32 037711b3d59c33004d3856fbdc83b99d4ff37a24768fa1be9ce3538a1cde4393"
    "futures-util 0.3.32 389ca41296e6190b48053de0321d02a77f32f8a5d2461dd38762c0593805c6d6"
    "getrandom 0.3.4 899def5c37c4fd7b2664648c28120ecec138e4d395b459e5ca34f9cce2dd77fd"
    "globset 0.4.18 52dfc19153a48bde0cbd630453615c8151bce3a5adfac7a0aebfbf0a1e1f57e3"
    "half 2.7.1 6ea2d84b969582b4b1864a92dc5d27cd2b77b622a8d79306834f1be5ba20d84b"
    "ignore 0.4.30 7b009b6744c1445efd7244084e25e498636412effb6760b55067553baa925cc7"
    "insta 1.48.0 86f0f8fee8c926415c58d6ae43a08523a26faccb2323f5e6b644fe7dd4ef6b82"
    "itertools 0.13.0 413ee7dfc52ee1a4949ceeb7dbc8a33f2d6c088194d9f922fb8318faf1f01186"
    "itoa 1.0.18 8f42a60cbdf9a97f5d2305f08a87dc4e09308d1276d28c869c684d7777685682"
    "js-sys 0.3.98 67df7112613f8bfd9150013a0314e196f4800d3201ae742489d999db2f979f08"
    "lexopt 0.3.2 803ec87c9cfb29b9d2633f20cba1f488db3fd53f2158b1024cbefb47ba05d413"
    "libc 0.2.186 68ab91017fe16c622486840e4c83c9a37afeff978bd239b5293d61ece587de66"
    "libmimalloc-sys 0.1.49 6a45a52f43e1c16f667ccfe4dd8c85b7f7c204fd5e3bf46c5b0db9a5c3c0b8e9"
    "linux-raw-sys 0.12.1 32a66949e030da00e8c7d4434b251670a91556f4144941d37452769c25d58a53"
    "log 0.4.29 5e5032e24019045c762d3c0f28f5b6b8bbf38563a65908389bf7978758920897"
    "memchr 2.8.3 cf8baf1c55e62ffcace7a9f06f4bd9cd3f0c4beb022d3b367256b91b87513d98"
    "mimalloc 0.1.52 2d4139bb28d14ad1facf21d5eb8825051b326e172d216b39f6d31df53cc97862"
    "num-traits 0.2.19 071dfc062690e90b734c0b2273ce72ad0ffa95f0c74596bc250dcfd960262841"
    "once_cell 1.21.4 9f7c3e4beb33f85d45ae3e3a1792185706c8e16d043238c593331cc7cd313b50"
    "oorandom 11.1.5 d6790f58c7ff633d8771f42965289203411a5e5c68388703c06e14f24770b41e"
    "page_size 0.6.0 30d5b2194ed13191c1999ae0704b7839fb18384fa22e49b57eeaa97d79ce40da"
    "pin-project-lite 0.2.17 a89322df9ebe1c1578d689c92318e070967d1042b512afbe49518723f4e6d5cd"
    "plotters 0.3.7 5aeb6f403d7a4911efb1e33402027fc44f29b5bf6def3effcc22d7bb75f2b747"
    "plotters-backend 0.3.7 df42e13c12958a16b3f7f4386b9ab1f3e7933914ecea48da7139435263a4172a"
    "plotters-svg 0.3.7 51bae2ac328883f7acdfea3d66a7c35751187f870bc81f94563733a154d7a670"
    "proc-macro2 1.0.106 8fd00f0bb2e90d81d1044c2b32617f68fcb9fa3bb7640c23e9c748e53fb30934"
    "quote 1.0.45 41f2619966050689382d2b44f664f4bc593e129785a36d6ee376ddf37259b924"
    "r-efi 5.3.0 69cdb34c158ceb288df11e18b4bd39de994f6657d83847bdffdbd7f346754b0f"
    "rayon 1.12.0 fb39b166781f92d482534ef4b4b1b2568f42613b53e5b6c160e24cfbfa30926d"
    "rayon-core 1.13.0 22e18b0f0062d30d4230b2e85ff77fdfe4326feb054b9783a3460d8435c8ab91"
    "regex 1.12.3 e10754a14b9137dd7b1e3e5b0493cc9171fdd105e0ab477f51b72e7f3ac0e276"
    "regex-automata 0.4.14 6e1dd4122fc1595e8162618945476892eefca7b88c52820e74af6262213cae8f"
    "regex-syntax 0.8.10 dc897dd8d9e8bd1ed8cdad82b5966c3e0ecae09fb1907d58efaa013543185d0a"
    "rustix 1.1.4 b6fe4565b9518b83ef4f91bb47ce29620ca828bd32cb7e408f0062e9930ba190"
    "rustversion 1.0.22 b39cdef0fa800fc44525c84ccb54a029961a8215f9619753635a9c0d2538d46d"
    "same-file 1.0.6 93fc1dc3aaa9bfed95e02e6eadabb4baf7e3078b0bd1b4d7b6b0b68378900502"
    "serde 1.0.228 9a8e94ea7f378bd32cbbd37198a4a91436180c5bb472411e48b5ec2e2124ae9e"
    "serde_core 1.0.228 41d385c7d4ca58e59fc732af25c3983b67ac852c1a25000afe1175de458b67ad"
    "serde_derive 1.0.228 d540f220d3187173da220f885ab66608367b6574e925011a9353e4badda91d79"
    "serde_json 1.0.149 83fc039473c5595ace860d8c4fafa220ff474b3fc6bfdb4293327f1a37e94d86"
    "shlex 1.3.0 0fda2ff0d084019ba4d7c6f371c95d8fd75ce3524c3cb8fb653a3023f6323e64"
    "similar 2.7.0 bbbb5d9659141646ae647b42fe094daf6c6192d1620870b449d9557f748b2daa"
    "slab 0.4.12 0c790de23124f9ab44544d7ac05d60440adc586479ce501c1d6d7da3cd8c9cf5"
    "static_assertions 1.1.0 a2eb9349b6444b326872e140eb1cf5e7c522154d69e7a0ffb0fb81c06b37543f"
    "syn 2.0.117 e665b8803e7b1d2a727f4023456bbbbe74da67099c585258af0ad9c5013b9b99"
    "tempfile 3.27.0 32497e9a4c7b38532efcdebeef879707aa9f794296a4f0244f6f69e9bc8574bd"
    "tinytemplate 1.2.1 be4d6b5f19ff7664e8c98d03e2139cb510db9b0a60b55f8e8709b689d939b6bc"
    "unicode-ident 1.0.24 e6e4313cd5fcd3dad5cafa179702e2b244f760991f45397d14d4ebf38247da75"
    "walkdir 2.5.0 29790946404f91d9c5d06f9874efddea1dc06c5efe94541a7d6863108e3a5e4b"
    "wasip2 1.0.3+wasi-0.2.9 20064672db26d7cdc89c7798c48a0fdfac8213434a1186e5ef29fd560ae223d6"
    "wasm-bindgen 0.2.121 49ace1d07c165b0864824eee619580c4689389afa9dc9ed3a4c75040d82e6790"
    "wasm-bindgen-macro 0.2.121 8e68e6f4afd367a562002c05637acb8578ff2dea1943df76afb9e83d177c8578"
    "wasm-bindgen-macro-support 0.2.121 d95a9ec35c64b2a7cb35d3fead40c4238d0940c86d107136999567a4703259f2"
    "wasm-bindgen-shared 0.2.121 c4e0100b01e9f0d03189a92b96772a1fb998639d981193d7dbab487302513441"
    "web-sys 0.3.98 4b572dff8bcf38bad0fa19729c89bb5748b2b9b1d8be70cf90df697e3a8f32aa"
    "winapi 0.3.9 5c839a674fcd7a98952e593242ea400abe93992746761e38641405d28b00f419"
    "winapi-i686-pc-windows-gnu 0.4.0 ac3b87c63620426dd9b991e5ce0329eff545bccbbb34f3be09ff6fb6ab51b7b6"
    "winapi-util 0.1.11 c2a7b1c03c876122aa43f3020e6c3c3ee5c05081c9a00739faf7503aeba10d22"
    "winapi-x86_64-pc-windows-gnu 0.4.0 712e227841d057c1ee1cd2fb22fa7e5a5461ae8e48fa2ca79ec42cfc1931183f"
    "windows-link 0.2.1 f0805222e57f7521d6a62e36fa9163bc891acd422f971defe97d64e70d0a4fe5"
    "windows-sys 0.61.2 ae137229bcbd6cdf0f7b80a31df61766145077ddf49416a728b02cb3921ff3fc"
    "wit-bindgen 0.57.1 1ebf944e87a7c253233ad6766e082e3cd714b5d03812acc24c318f549614536e"
    "zerocopy 0.8.48 eed437bf9d6692032087e337407a86f04cd8d6a16a37199ed57949d415bd68e9"
    "zerocopy-derive 0.8.48 70e3cd084b1788766f53af483dd21f93881ff30d7320490ec3ef7526d203bad4"
    "zmij 1.0.21 b8848ee67ecc8aedbaf3e4122217aff892639231befc6a1b58d29fff4c2cabaa"
  ];
in
craneLib.buildPackage {
  pname = "nixfmt-rs";
  inherit version;
  src = craneLib.downloadCargoPackage (
    crate "nixfmt_rs" version "a79a3d2c5fb02436a3bbc5ef251bfc6a06cd631e1f5aea594f0dad83c95e2a65"
  );
  strictDeps = true;
  doCheck = false;
  # Nothing to share with the project's dependency builds.
  cargoArtifacts = null;
  cargoVendorDir = craneLib.vendorMultipleCargoDeps {
    cargoLockParsedList = [ { package = dependencies; } ];
  };
  cargoExtraArgs = "--locked --bin nixfmt";
  doInstallCheck = true;
  installCheckPhase = ''
    $out/bin/nixfmt --version | grep -Fx "nixfmt-rs ${version}"
  '';
  meta = {
    description = "Rust implementation of nixfmt (RFC 166 style), the release CI installs";
    homepage = "https://crates.io/crates/nixfmt_rs";
    license = lib.licenses.mpl20;
    mainProgram = "nixfmt";
  };
}
