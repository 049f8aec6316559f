#!/usr/bin/env bash
# A cargo target dir that was built at another path (copied or moved, e.g. a cache restored onto a
# new machine) breaks the C/C++ builds of -sys crates: CMake refuses a cache made in another
# directory, and build-script outputs point the linker at the old path. Such a profile dir
# (debug, release, …) is removed here, with a message, so cargo rebuilds it cleanly; one built in
# place is left alone. Cheap: it reads a few small files.
set -euo pipefail
T="${CARGO_TARGET_DIR:-}"
[ -n "$T" ] && [ -d "$T" ] || exit 0
T=$(cd "$T" && pwd -P)
for prof in "$T"/*/; do
  prof=${prof%/}
  [ -d "$prof/build" ] || continue
  why=""
  for cache in "$prof"/build/*/out/build/CMakeCache.txt; do
    [ -f "$cache" ] || continue
    made=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$cache")
    here=$(cd "$(dirname "$cache")" && pwd -P)
    if [ -n "$made" ] && [ "$made" != "$here" ]; then why="$cache was made in $made"; break; fi
  done
  if [ -z "$why" ]; then
    # A build script's link-search path into some other target dir's build/<crate>/out.
    while IFS= read -r p; do
      case "$p" in "$T"/*) ;; *) why="a build script's link path $p"; break ;; esac
    done < <(cat "$prof"/build/*/output 2>/dev/null \
      | sed -n -E 's#^cargo::?rustc-link-search=([a-z]+=)?(/.*/(debug|release)/build/[^/]+/out).*#\2#p')
  fi
  if [ -n "$why" ]; then
    echo "target_guard: $prof was built at another path ($why); removing it so cargo rebuilds it cleanly"
    rm -rf "$prof"
  fi
done
