#!/usr/bin/env bash
# Fetch free instrumental music from Debian's game-soundtrack packages and lay it out as the
# `instrumental` dataset: data/instrumental/{train,validation,test}/<package>/<file> (symlinks).
#
#   scripts/fetch_debian_music.sh [DEST]          # DEST defaults to data/instrumental
#
# Steps (each skipped when already done, so a second run only rebuilds the layout):
#   1. `apt-get download` each package (no install, no root needed) into $CACHE/debs;
#   2. `dpkg-deb -x` it into $CACHE/extract/<package>; nexuiz's music.pk3 (a zip) is unzipped;
#   3. every audio file (.ogg .opus .mp3 .flac .wav) not in EXCLUDED below is linked into
#      DEST/<split>/<package>/<file>, the split chosen per track by a stable hash:
#      sha1("<package>/<file>") as an integer, mod 100: < 10 test, < 20 validation, else train.
# The layout is built in a temporary folder and swapped in, so DEST is never half-written.
# Versions and licences: pretrained/DATA.md (and $CACHE/extract/<package>/usr/share/doc/<package>/copyright).
set -euo pipefail

DEST=${1:-data/instrumental}
CACHE=${CACHE:-data/debian-music}
# Left out: ufoai-music (its music is in a 0music.pk3; not needed for the hours) and
# planetblupi-music-ogg (10 files of 10-29 minutes each: long loops that would weigh 2.7 hours).
PACKAGES=(warzone2100-music nexuiz-music wesnoth-1.16-music hyperrogue-music singularity-music asc-music)

# Tracks left out: "<package>/<file>  # why". Screened automatically (file names, package
# descriptions and the shipped model's vocal-energy share), not listened to: see pretrained/DATA.md.
EXCLUDED=$(cat <<'LIST'
warzone2100-music/menu_enhanced.opus     # a remaster of menu.opus: the same piece twice (and across splits)
warzone2100-music/track3_enhanced.opus   # a remaster of track3.opus
nexuiz-music/sixtyfour_revisited.ogg     # a version of sixtyfour_.ogg
wesnoth-1.16-music/frantic-old.ogg       # an older version of frantic.ogg
wesnoth-1.16-music/silence.ogg           # 10 s of silence
wesnoth-1.16-music/nunc_dimittis.ogg     # the name of a sung canticle
nexuiz-music/infight.ogg                 # screen: vibrato harmonic stacks like a sung line (from 124 s)
nexuiz-music/digital-pursuit.ogg         # screen: vowel-like formant blobs, a vocal pad or chop (from 170 s)
warzone2100-music/track8.opus            # screen: formant-like blobs over harmonic stacks (first 10 s)
LIST
)

die() { echo "error: $*" >&2; exit 2; }
for tool in apt-get dpkg-deb unzip sha1sum; do
    command -v "$tool" >/dev/null || die "$tool not found; this script needs a Debian/Ubuntu system with $tool (apt-get install unzip)"
done

# sha1 of a string, as a 160-bit integer, mod 100 (Horner's rule over the hex digits).
hash_mod_100() {
    local hex r=0 i
    hex=$(printf '%s' "$1" | sha1sum | cut -c1-40)
    for ((i = 0; i < 40; i++)); do r=$(( (r * 16 + 16#${hex:i:1}) % 100 )); done
    echo "$r"
}

split_of() {
    local h; h=$(hash_mod_100 "$1")
    if ((h < 10)); then echo test; elif ((h < 20)); then echo validation; else echo train; fi
}

mkdir -p "$CACHE/debs" "$CACHE/extract"
for pkg in "${PACKAGES[@]}"; do
    deb=$(ls "$CACHE/debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    if [[ -z $deb ]]; then
        echo "downloading $pkg"
        (cd "$CACHE/debs" && apt-get download "$pkg") \
            || die "apt-get download $pkg failed; run 'sudo apt-get update' (and check that the package exists: apt-cache policy $pkg)"
        deb=$(ls "$CACHE/debs/${pkg}"_*.deb | head -n1)
    fi
    out="$CACHE/extract/$pkg"
    if [[ ! -f $out/.done ]]; then
        echo "extracting $deb"
        rm -rf "$out" && mkdir -p "$out"
        dpkg-deb -x "$deb" "$out" || die "$deb: dpkg-deb -x failed (a broken download? delete it and rerun)"
        while IFS= read -r -d '' pk3; do
            unzip -q -o "$pk3" -d "${pk3%.pk3}" || die "$pk3: unzip failed"
        done < <(find "$out" -name 'music.pk3' -print0)
        dpkg-deb -f "$deb" Version > "$out/.version"
        touch "$out/.done"
    fi
done

tmp=$(mktemp -d "${DEST%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
count=0
for pkg in "${PACKAGES[@]}"; do
    while IFS= read -r -d '' file; do
        name=$(basename "$file")
        key="$pkg/$name"
        if grep -qxF "$key" <<<"$(sed 's/[[:space:]]*#.*//' <<<"$EXCLUDED")"; then
            continue
        fi
        split=$(split_of "$key")
        mkdir -p "$tmp/$split/$pkg"
        [[ -e $tmp/$split/$pkg/$name ]] && die "$key: two files of $pkg have this name; the layout needs unique names"
        ln -s "$(realpath "$file")" "$tmp/$split/$pkg/$name"
        count=$((count + 1))
    done < <(find "$CACHE/extract/$pkg" -type f \( -iname '*.ogg' -o -iname '*.opus' -o -iname '*.mp3' \
                  -o -iname '*.flac' -o -iname '*.wav' \) -path '*/music/*' -not -path '*/.*' -print0 | sort -z)
done
((count > 0)) || die "no audio files found under $CACHE/extract"
rm -rf "${DEST%/}.old"
[[ -e $DEST ]] && mv "$DEST" "${DEST%/}.old"
mv "$tmp" "$DEST"
rm -rf "${DEST%/}.old"
trap - EXIT
for split in train validation test; do
    echo "$split: $(find "$DEST/$split" -type l 2>/dev/null | wc -l) tracks"
done
echo "wrote $DEST ($count tracks)"
