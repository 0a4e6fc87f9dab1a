# Sourced by demo.sh, test.sh and setup.sh: run as root whether started as
# root (a root shell, a container, CI) or as a user with sudo, and find the
# Rust toolchain either way.

# The Rust version weir needs (workspace `rust-version`).
WEIR_RUST_VERSION=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")

# Becomes root: as root, nothing to do; otherwise re-runs this script under
# sudo, keeping the caller's toolchain (rustup keeps it under $HOME, which
# sudo changes).
become_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  if ! command -v sudo >/dev/null; then
    echo "$0: needs root (namespaces, packages): run it as root, or install sudo" >&2
    exit 1
  fi
  local cargo
  cargo=$(command -v cargo || true)
  exec sudo --preserve-env=CARGO_HOME,RUSTUP_HOME,RUSTUP_TOOLCHAIN,CARGO_TARGET_DIR \
    env "PATH=${cargo:+$(dirname "$cargo"):}$PATH" \
    "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" \
    bash "$(readlink -f "$0")" "$@"
}

# Puts cargo on PATH: `sudo script` resets PATH, so a toolchain installed by
# rustup for the user who ran sudo is looked for in that user's home.
find_cargo() {
  if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    local home
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH="$home/.cargo/bin:$PATH" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
    fi
  fi
  if ! command -v cargo >/dev/null; then
    cat >&2 <<MSG
$0: cargo not found. weir needs Rust $WEIR_RUST_VERSION or newer (Debian
bookworm's own rustc, 1.63, is too old). Install it with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or: . "\$HOME/.cargo/env") and run $0 again.
MSG
    exit 1
  fi
  local have
  have=$(rustc --version | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
  if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$WEIR_RUST_VERSION" "$have" | sort -V | head -n1)" != "$WEIR_RUST_VERSION" ]; then
    echo "$0: rustc $have is too old: weir needs $WEIR_RUST_VERSION or newer (rustup update)" >&2
    exit 1
  fi
}
