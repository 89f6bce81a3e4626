/* Writes a LUKS2 header image the way the agent formats a persistent volume
 * (docs/design.md §4.1/§4.4), for checking ValidateLuksImage against what a
 * real libcryptsetup writes:
 *
 *   cc make_luks_header.c -o make_luks_header -lcryptsetup
 *   truncate -s 64M data.img; rm -f hdr.img; truncate -s 48K hdr.img
 *   ./make_luks_header hdr.img data.img               # integrity none (works without device-mapper)
 *   ./make_luks_header hdr.img data.img 'hmac(sha256)' # needs dm-integrity: run in the test VM
 *
 * luks2-cryptsetup-2.6.1-none.img next to this file was made by the first
 * form with Debian bookworm's libcryptsetup 2.6.1. libcryptsetup fills the
 * keyslots area with random bytes; the agent zeroes it in its copy before
 * hashing and writing the image (the LUKS2 checksums do not cover it). */
#include <libcryptsetup.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s HEADER_FILE DATA_FILE [INTEGRITY]\n", argv[0]);
    return 2;
  }
  struct crypt_device* cd = NULL;
  int r = crypt_init_data_device(&cd, argv[1], argv[2]);
  if (r >= 0) r = crypt_set_metadata_size(cd, 16384, 16384);
  if (r >= 0) r = crypt_set_data_offset(cd, 32768);
  /* No benchmark: the digest gets PBKDF2's minimum, 1000 iterations. */
  struct crypt_pbkdf_type pbkdf = {.type = CRYPT_KDF_PBKDF2, .hash = "sha256", .iterations = 1000,
                                   .flags = CRYPT_PBKDF_NO_BENCHMARK};
  if (r >= 0) r = crypt_set_pbkdf_type(cd, &pbkdf);
  struct crypt_params_luks2 params = {.sector_size = 4096, .label = "cocostorage"};
  if (argc > 3) params.integrity = argv[3];
  char key[96];
  memset(key, 7, sizeof(key));
  if (r >= 0) r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, key, argc > 3 ? 96 : 64, &params);
  if (r < 0) fprintf(stderr, "failed: %d\n", r);
  crypt_free(cd);
  return r < 0;
}
