/*
 * podvisor-runner: starts the guest agent's short commands (ip, mount, crun ...) for it.
 *
 * Under TCG, a process the agent (node) starts itself costs it hundreds of milliseconds of guest
 * CPU: Node's child_process code on its first use, and a fork of the ~100 MB agent every time. On
 * a pod's start those commands are on the critical path (the guest NIC, the share mount). stage2-init
 * starts this small static program before the agent; the agent hands it each command over a unix
 * socket (agent/command-runner.ts) and it forks itself, a few hundred KB, instead. The agent falls
 * back to starting the command itself when the socket does not answer.
 *
 * It trusts its caller as the agent does: the socket is 0600 in /run/podvisor (root only, outside
 * every container's root), and what it runs is what root in the guest could run anyway.
 *
 * One command per connection; integers are little-endian u32.
 *   request: argv_len, stdin_len, argv (argv_len bytes: words, each NUL-terminated), stdin bytes
 *   reply:   kind (0 exited, 1 killed by a signal, 2 could not start), code (exit status, signal
 *            number or errno), stdout_len, stderr_len, stdout, stderr
 * Each output keeps its first OUT_MAX bytes; the rest is read and dropped so the command never
 * blocks on a full pipe. stdin is at most STDIN_MAX bytes, less than a pipe holds, so it is written
 * whole before the outputs are read.
 *
 * Usage: podvisor-runner <socket-path>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARGV_MAX (64 * 1024)
#define STDIN_MAX (60 * 1024)
#define OUT_MAX (1024 * 1024)
/* Commands in flight at once; more connections wait in the listen backlog. */
#define MAX_LIVE 32

static int read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

struct output {
  char *data;
  uint32_t len;
};

/* Appends what the pipe has (up to OUT_MAX kept); returns 0 at end of file. */
static int drain(int fd, struct output *out) {
  char chunk[16384];
  ssize_t n = read(fd, chunk, sizeof chunk);
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
  if (n == 0) return 0;
  size_t keep = out->len + (size_t)n > OUT_MAX ? OUT_MAX - out->len : (size_t)n;
  memcpy(out->data + out->len, chunk, keep);
  out->len += (uint32_t)keep;
  return 1;
}

static void reply(int conn, uint32_t kind, uint32_t code, struct output *out, struct output *err) {
  uint32_t head[4] = { kind, code, out ? out->len : 0, err ? err->len : 0 };
  if (write_full(conn, head, sizeof head) < 0) return;
  if (out && write_full(conn, out->data, out->len) < 0) return;
  if (err) write_full(conn, err->data, err->len);
}

/* One connection, in its own process: read the command, run it, answer, exit. */
static void serve(int conn) {
  signal(SIGCHLD, SIG_DFL);
  uint32_t head[2];
  if (read_full(conn, head, sizeof head) < 0) return;
  uint32_t argv_len = head[0], stdin_len = head[1];
  if (argv_len == 0 || argv_len > ARGV_MAX || stdin_len > STDIN_MAX) return;
  char *words = malloc(argv_len);
  char *input = malloc(stdin_len + 1);
  if (!words || !input || read_full(conn, words, argv_len) < 0 || read_full(conn, input, stdin_len) < 0) return;
  if (words[argv_len - 1] != '\0') return;
  size_t argc = 0;
  for (uint32_t i = 0; i < argv_len; i++) argc += words[i] == '\0';
  char **argv = calloc(argc + 1, sizeof *argv);
  if (!argv) return;
  for (size_t i = 0, at = 0; i < argc; i++) {
    argv[i] = words + at;
    at += strlen(words + at) + 1;
  }

  int in[2], out[2], err[2], started[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(started, O_CLOEXEC)) {
    reply(conn, 2, (uint32_t)errno, NULL, NULL);
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    reply(conn, 2, (uint32_t)errno, NULL, NULL);
    return;
  }
  if (pid == 0) {
    signal(SIGPIPE, SIG_DFL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execvp(argv[0], argv);
    int e = errno;
    write_full(started[1], &e, sizeof e); /* close-on-exec: nothing arrives when exec worked */
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  close(started[1]);
  int exec_errno = 0;
  if (read_full(started[0], &exec_errno, sizeof exec_errno) == 0) {
    waitpid(pid, NULL, 0);
    reply(conn, 2, (uint32_t)exec_errno, NULL, NULL);
    return;
  }
  write_full(in[1], input, stdin_len); /* a command that does not read its input gets EPIPE: fine */
  close(in[1]);

  struct output o = { malloc(OUT_MAX), 0 }, e = { malloc(OUT_MAX), 0 };
  if (!o.data || !e.data) return;
  struct pollfd fds[2] = { { out[0], POLLIN, 0 }, { err[0], POLLIN, 0 } };
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      if (!drain(fds[i].fd, i == 0 ? &o : &e)) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (WIFSIGNALED(status)) reply(conn, 1, (uint32_t)WTERMSIG(status), &o, &e);
  else reply(conn, 0, (uint32_t)WEXITSTATUS(status), &o, &e);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: podvisor-runner <socket-path>\n");
    return 2;
  }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(argv[1]) >= sizeof addr.sun_path) {
    fprintf(stderr, "podvisor-runner: socket path too long\n");
    return 2;
  }
  strcpy(addr.sun_path, argv[1]);
  signal(SIGPIPE, SIG_IGN);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  unlink(argv[1]);
  umask(077); /* root only from the start; the commands get the agent's usual 022 back below */
  if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(argv[1], 0600) < 0 || listen(s, 64) < 0) {
    fprintf(stderr, "podvisor-runner: cannot listen on %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  umask(022);
  int live = 0;
  for (;;) {
    while (live > 0 && waitpid(-1, NULL, WNOHANG) > 0) live--;
    while (live >= MAX_LIVE && waitpid(-1, NULL, 0) > 0) live--;
    int conn = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
      if (errno != EINTR) usleep(10000); /* e.g. out of fds: do not spin */
      continue;
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(s);
      serve(conn);
      _exit(0);
    }
    if (pid > 0) live++;
    close(conn);
  }
}
