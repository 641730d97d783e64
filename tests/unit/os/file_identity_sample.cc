// A tiny shared library built with a sha1 build-id: file_identity_test reads its build-id and
// compares it with what `readelf -n` printed at build time.
extern "C" int procmig_file_identity_sample(int x) { return x * 3 + 1; }
