/*
 * podvisor-identity: makes a VM-template clone its own machine (agent/identity.ts runs it).
 *
 * A clone resumes the template's saved kernel: same wall clock (frozen at the save), same
 * CRNG key, and this kernel (Debian 12, 6.1) has no VM generation id to notice the clone.
 * Node has no ioctl or clock_settime, so this static helper does the two syscalls the
 * agent cannot:
 *   - clock_settime(CLOCK_REALTIME) to the host's time given in argv[1] (ns since the epoch);
 *   - RNDADDENTROPY with the host's random bytes read from stdin (credited), then
 *     RNDRESEEDCRNG so the CRNG is rekeyed now rather than at its next scheduled reseed
 *     (up to a minute later). The reseed also draws RDSEED/RDRAND, which QEMU serves from
 *     the host's own RNG, so each clone's new key differs even without the host's bytes.
 * Usage: podvisor-identity <unix-ns> < seed   (seed: 16..512 bytes)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SEED_MAX 512

static int fail(const char *what) {
  fprintf(stderr, "podvisor-identity: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: podvisor-identity <unix-ns> < seed\n");
    return 2;
  }
  char *end;
  errno = 0;
  unsigned long long ns = strtoull(argv[1], &end, 10);
  if (errno || *end || ns == 0) {
    fprintf(stderr, "podvisor-identity: bad time %s\n", argv[1]);
    return 2;
  }

  struct {
    struct rand_pool_info info;
    unsigned char buf[SEED_MAX];
  } seed;
  size_t n = 0;
  while (n < SEED_MAX) {
    ssize_t r = read(0, seed.buf + n, SEED_MAX - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail("reading the seed");
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n < 16) {
    fprintf(stderr, "podvisor-identity: seed too short (%zu bytes)\n", n);
    return 2;
  }

  struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL), .tv_nsec = (long)(ns % 1000000000ULL) };
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) return fail("clock_settime");

  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail("opening /dev/urandom");
  seed.info.entropy_count = (int)(n * 8);
  seed.info.buf_size = (int)n;
  if (ioctl(fd, RNDADDENTROPY, &seed.info) != 0) return fail("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) != 0) return fail("RNDRESEEDCRNG");
  close(fd);
  return 0;
}
