#include "lwsinit/supervisor.h"

#include "lwsinit/launcher.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the agent does with each signal it reads. Anything not listed is
 * forwarded to the child's process group, once. */
enum sig_action { ACT_FORWARD, ACT_REAP, ACT_STOP, ACT_DROP };

static const struct {
  int sig;
  enum sig_action act;
} sig_table[] = {
  {SIGCHLD, ACT_REAP},
  {SIGTERM, ACT_STOP},
  {SIGINT, ACT_STOP},
  /* Terminal job control is the terminal's business, not the child's: the
   * contract excludes it, as tini does. */
  {SIGTSTP, ACT_DROP},
  {SIGTTIN, ACT_DROP},
  {SIGTTOU, ACT_DROP},
};

static enum sig_action action_for(int sig)
{
  for (size_t i = 0; i < sizeof(sig_table) / sizeof(sig_table[0]); i++)
    if (sig_table[i].sig == sig)
      return sig_table[i].act;
  return ACT_FORWARD;
}

/* Every signal is blocked, the fault signals (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGTRAP, SIGABRT, SIGSYS) too: one sent with kill(2) is then
 * read from the signalfd and forwarded like any other (contract, "The
 * init"), while a real fault of this process still kills it, because the
 * kernel unblocks a synchronous fault signal and resets it to its default
 * action before delivering it (kernel/signal.c, force_sig_info_to_task;
 * for PID 1 it also clears SIGNAL_UNKILLABLE). abort(3) unblocks SIGABRT
 * itself. So a crash of the agent stays a crash. */
static void handled_set(sigset_t *set)
{
  sigfillset(set);
  sigdelset(set, SIGKILL);
  sigdelset(set, SIGSTOP);
}

int lwsi_supervisor_block_signals(sigset_t *orig)
{
  sigset_t set;
  handled_set(&set);
  if (sigprocmask(SIG_BLOCK, &set, orig) < 0)
    return -errno;
  return 0;
}

int lwsi_supervisor_exit_code(int status)
{
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return 255;
}

static void send_group(struct lwsi_supervisor *sup, int sig)
{
  /* The result is not looked at: ESRCH means the group is already gone,
   * which is what we wanted, and EPERM cannot happen for our own child's
   * group (we are root or its owner, kill(2)). */
  if (sup->child > 0)
    (void)kill(-sup->child, sig);
}

static void on_child_exit(struct lwsi_supervisor *sup, int status)
{
  sup->child_running = false;
  sup->child_status = status;
  uv_timer_stop(&sup->drain_timer);
  uv_timer_stop(&sup->grace_timer);
  uv_timer_stop(&sup->hold_timer);
  sup->draining = false;
  /* Whatever the engine left in its process group goes with it, so that a
   * stray helper cannot hold the pod up after the engine is gone. */
  send_group(sup, SIGKILL);
  sup->cb(sup, LWSI_SUP_CHILD_EXITED, status);
}

/* Reaps every exited child: the engine, and any orphan re-parented to us.
 * No allocation here (the reap path must not fail). */
static void reap(struct lwsi_supervisor *sup)
{
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR)
      continue;
    if (pid <= 0)
      return; /* 0: none left that has exited; ECHILD: none at all. */
    if (pid == sup->child && sup->child_running) {
      on_child_exit(sup, status);
    } else {
      sup->reaped_others++;
      sup->reaped_pid = pid;
      sup->cb(sup, LWSI_SUP_REAPED, status);
    }
  }
}

static void forward(struct lwsi_supervisor *sup, int sig)
{
  if (!sup->child_running) {
    sup->cb(sup, LWSI_SUP_DROPPED, sig);
    return;
  }
  send_group(sup, sig);
  sup->cb(sup, LWSI_SUP_FORWARDED, sig);
}

static void on_grace(uv_timer_t *t)
{
  struct lwsi_supervisor *sup = t->data;
  if (!sup->child_running)
    return;
  send_group(sup, SIGKILL);
  sup->cb(sup, LWSI_SUP_KILLED, SIGKILL);
}

static void forward_stop(struct lwsi_supervisor *sup)
{
  sup->draining = false;
  sup->held = false;
  uv_timer_stop(&sup->drain_timer);
  uv_timer_stop(&sup->hold_timer);
  forward(sup, sup->stop_sig);
  if (sup->child_running && !uv_is_active((uv_handle_t *)&sup->grace_timer))
    uv_timer_start(&sup->grace_timer, on_grace, sup->grace_ms, 0);
}

/* Forwards once the drain is over and nothing holds the stop. */
static void maybe_forward(struct lwsi_supervisor *sup)
{
  if (sup->draining && !sup->held && !uv_is_active((uv_handle_t *)&sup->drain_timer))
    forward_stop(sup);
}

static void on_drain(uv_timer_t *t)
{
  maybe_forward(t->data);
}

/* The hold's deadline: the engine is stopped whatever the others do. */
static void on_hold_deadline(uv_timer_t *t)
{
  struct lwsi_supervisor *sup = t->data;
  if (sup->draining)
    forward_stop(sup);
}

void lwsi_supervisor_hold(struct lwsi_supervisor *sup, uint64_t max_ms)
{
  if (sup->stopping)
    return;
  sup->held = true;
  sup->hold_max_ms = max_ms;
}

void lwsi_supervisor_release(struct lwsi_supervisor *sup)
{
  if (!sup->held)
    return;
  sup->held = false;
  maybe_forward(sup);
}

void lwsi_supervisor_stop(struct lwsi_supervisor *sup, int sig, bool drain)
{
  if (!sup->stopping) {
    sup->stopping = true;
    sup->stop_sig = sig;
    bool drains = drain && sup->drain_ms > 0;
    if (sup->child_running && (drains || sup->held)) {
      sup->draining = true;
      if (drains)
        uv_timer_start(&sup->drain_timer, on_drain, sup->drain_ms, 0);
      if (sup->held)
        uv_timer_start(&sup->hold_timer, on_hold_deadline, sup->hold_max_ms, 0);
      maybe_forward(sup);
      return;
    }
    forward_stop(sup);
    return;
  }
  /* A second stop signal while draining (or held) cuts the wait short: the
   * first is forwarded now, then this one, so that each arrives once (an
   * engine may read a second SIGINT as "stop harder"). */
  if (sup->draining)
    forward_stop(sup);
  forward(sup, sig);
}

static void on_signal_fd(uv_poll_t *h, int status, int events)
{
  struct lwsi_supervisor *sup = h->data;
  struct signalfd_siginfo si[16];
  for (;;) {
    ssize_t n = read(sup->sfd, si, sizeof(si));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* EAGAIN: drained. */
    for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
      int sig = (int)si[i].ssi_signo;
      /* A SIGPIPE (or any signal) this process raised on itself, e.g. by
       * writing to a closed socket, is not the operator's and is not the
       * child's business. */
      if ((pid_t)si[i].ssi_pid == sup->self && si[i].ssi_code == SI_USER && sig != SIGCHLD)
        continue;
      switch (action_for(sig)) {
      case ACT_REAP:
        reap(sup);
        break;
      case ACT_STOP:
        sup->cb(sup, LWSI_SUP_STOP_SIGNAL, sig);
        break;
      case ACT_DROP:
        break;
      case ACT_FORWARD:
        forward(sup, sig);
        break;
      }
    }
  }
}

int lwsi_supervisor_init(struct lwsi_supervisor *sup, uv_loop_t *loop, const sigset_t *orig,
                         uint64_t drain_ms, uint64_t grace_ms, lwsi_sup_cb cb)
{
  memset(sup, 0, sizeof(*sup));
  sup->loop = loop;
  sup->child_mask = *orig;
  sup->drain_ms = drain_ms;
  sup->grace_ms = grace_ms;
  sup->cb = cb;
  sup->self = getpid();
  sup->sfd = -1;

  if (sup->self != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
    return -errno;

  sigset_t set;
  handled_set(&set);
  sup->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sup->sfd < 0)
    return -errno;
  int rc = uv_poll_init(loop, &sup->sig_poll, sup->sfd);
  if (rc < 0) {
    close(sup->sfd);
    sup->sfd = -1;
    return rc;
  }
  sup->sig_poll.data = sup;
  uv_timer_init(loop, &sup->drain_timer);
  uv_timer_init(loop, &sup->grace_timer);
  uv_timer_init(loop, &sup->hold_timer);
  sup->hold_timer.data = sup;
  sup->drain_timer.data = sup;
  sup->grace_timer.data = sup;
  return uv_poll_start(&sup->sig_poll, UV_READABLE, on_signal_fd);
}

int lwsi_supervisor_spawn(struct lwsi_supervisor *sup, char *const *argv, char *const *envp)
{
  pid_t pid;
  int rc = lwsi_launcher_spawn(argv, envp, &sup->child_mask, &pid);
  if (pid > 0) {
    sup->child = pid;
    /* A child whose exec failed still exits and is reaped like any other,
     * but it is not "running": its status is not the agent's to report. */
    sup->child_running = rc == 0;
  }
  return rc;
}

void lwsi_supervisor_rearm(struct lwsi_supervisor *sup)
{
  if (sup->child_running)
    return;
  uv_timer_stop(&sup->drain_timer);
  uv_timer_stop(&sup->grace_timer);
  uv_timer_stop(&sup->hold_timer);
  sup->child = 0;
  sup->child_status = 0;
  sup->stopping = false;
  sup->draining = false;
  sup->held = false;
  sup->stop_sig = 0;
}

void lwsi_supervisor_close(struct lwsi_supervisor *sup)
{
  if (sup->sfd < 0)
    return;
  uv_close((uv_handle_t *)&sup->sig_poll, NULL);
  uv_close((uv_handle_t *)&sup->drain_timer, NULL);
  uv_close((uv_handle_t *)&sup->grace_timer, NULL);
  uv_close((uv_handle_t *)&sup->hold_timer, NULL);
  close(sup->sfd);
  sup->sfd = -1;
}
