#!/usr/bin/env bash
# Installs what the console's browser tests (tests/tests/e2e/console.rs) need,
# idempotently, from the package registries:
#  - Debian's `chromium` (driven headless at /usr/bin/chromium) and Node.js
#    with npm, with apt-get when missing;
#  - playwright-core, pinned by tests/browser/package-lock.json, with `npm ci`
#    into tests/browser/node_modules (again only when the lock file changes).
# Playwright downloads no browser here: the tests use Debian's.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup-browser: $*"; }
die() {
  echo "setup-browser: error: $*" >&2
  exit 1
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  bash scripts/apt-install.sh "${missing[@]}" || die "${missing[*]} missing: install them"
fi
say "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: no version')"
say "node $(node --version)"
# playwright-core 1.65 asks for Node.js 20 or later (its package.json's engines);
# Debian 12's own nodejs is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] ||
  die "Node.js $(node --version) is too old for playwright-core (it needs 20 or later): install Node.js 20+ (e.g. NodeSource's nodejs package) and run this again"

dir=tests/browser
if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
  say "npm ci in $dir"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
    die "npm ci in $dir failed"
  cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
fi
say "playwright-core $(node -p "require('./$dir/node_modules/playwright-core/package.json').version")"
