#!/bin/sh
# Build step of the stand-in image (TEST DOUBLE): gather a minimal root file system holding only the
# Python interpreter of the base image, its standard library and the shared libraries they load, so the
# image that nodes `docker load` stays small (about 35 MB instead of the 235 MB node image).
set -eu
out=$1
py=$(readlink -f /usr/bin/python3)
ver=$(basename "$py")                     # python3.11
mkdir -p "$out/usr/bin" "$out/usr/lib/x86_64-linux-gnu" "$out/usr/lib64" "$out/etc" "$out/tmp" "$out/root"
chmod 1777 "$out/tmp"
for d in bin sbin lib; do ln -s "usr/$d" "$out/$d"; done
ln -s usr/lib64 "$out/lib64"
cp "$py" "$out/usr/bin/$ver"
ln -s "$ver" "$out/usr/bin/python3"
# the standard library without what a server never imports
cp -a "/usr/lib/$ver" "$out/usr/lib/$ver"
for skip in test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils unittest/test; do
  rm -rf "$out/usr/lib/$ver/$skip"
done
# every shared library the interpreter and its extension modules load, plus NSS for name lookups
libs=$( (ldd "$py"; for so in /usr/lib/$ver/lib-dynload/*.so; do ldd "$so" || true; done) \
  | awk '/=> \// {print $3} /^\t\/lib64\// {print $1}' | sort -u)
for lib in $libs /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2; do
  case "$lib" in
    /lib64/*) cp -L "$lib" "$out/usr/lib64/$(basename "$lib")" ;;
    *) cp -L "$lib" "$out/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
  esac
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$out/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$out/etc/nsswitch.conf"
