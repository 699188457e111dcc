/* Equality of two rendezvous messages, for the tests of the wire format:
 * the unit test (tests/unit/test_wire.c) and the libFuzzer harness
 * (tests/fuzz/fuzz_wire.c) both check that a message survives encode and
 * decode, and must agree on what "the same message" means.
 *
 * Header-only, so that run.sh, which builds each harness from one .c file
 * outside meson, needs no change. Included by its path from the source
 * root ("tests/helpers/wire_msg.h"), which both builds have on the include
 * path. */
#ifndef LWSINIT_TESTS_WIRE_MSG_H
#define LWSINIT_TESTS_WIRE_MSG_H

#include "lwsinit/wire.h"

#include <stdbool.h>
#include <string.h>

/* True when a and b carry the same message: the version, the type and
 * every field that travels. Fields that do not travel are ignored (a join's
 * mac without auth, a welcome's proof without auth, a heartbeat's echo and
 * held without has_echo), since decode cannot give them back. */
/* The launch commands of two joins, argument by argument. */
static inline bool wire_msg_cmd_equal(const struct lwsi_msg_join *x, const struct lwsi_msg_join *y)
{
  if (x->ncmd != y->ncmd)
    return false;
  for (uint32_t i = 0; i < x->ncmd; i++)
    if (strcmp(x->cmd[i], y->cmd[i]) != 0)
      return false;
  return true;
}

static inline bool wire_msg_equal(const struct lwsi_msg *a, const struct lwsi_msg *b)
{
  if (a->type != b->type || a->v != b->v)
    return false;
  switch (a->type) {
  case LWSI_MSG_HELLO:
    return memcmp(a->hello.nonce, b->hello.nonce, sizeof(a->hello.nonce)) == 0 &&
           memcmp(a->hello.challenge, b->hello.challenge, sizeof(a->hello.challenge)) == 0 &&
           a->hello.auth == b->hello.auth;
  case LWSI_MSG_JOIN: {
    const struct lwsi_msg_join *x = &a->join, *y = &b->join;
    return x->rank == y->rank && x->size == y->size && x->gpus == y->gpus &&
           strcmp(x->revision, y->revision) == 0 && strcmp(x->pod, y->pod) == 0 &&
           memcmp(x->nonce, y->nonce, sizeof(x->nonce)) == 0 &&
           memcmp(x->challenge, y->challenge, sizeof(x->challenge)) == 0 &&
           memcmp(x->digest, y->digest, sizeof(x->digest)) == 0 && x->auth == y->auth &&
           (!x->auth || memcmp(x->mac, y->mac, sizeof(x->mac)) == 0) &&
           strcmp(x->preset, y->preset) == 0 && x->dist_port == y->dist_port &&
           x->cmd_total == y->cmd_total && wire_msg_cmd_equal(x, y);
  }
  case LWSI_MSG_WELCOME:
    return a->welcome.rank == b->welcome.rank && a->welcome.auth == b->welcome.auth &&
           (!a->welcome.auth ||
            memcmp(a->welcome.proof, b->welcome.proof, sizeof(a->welcome.proof)) == 0);
  case LWSI_MSG_REFUSE:
    return strcmp(a->refuse.code, b->refuse.code) == 0 &&
           strcmp(a->refuse.reason, b->refuse.reason) == 0 && a->refuse.auth == b->refuse.auth &&
           (!a->refuse.auth || memcmp(a->refuse.mac, b->refuse.mac, sizeof(a->refuse.mac)) == 0);
  case LWSI_MSG_WAITING:
    if (a->waiting.joined != b->waiting.joined || a->waiting.nmissing != b->waiting.nmissing ||
        a->waiting.nlisted != b->waiting.nlisted)
      return false;
    for (uint32_t i = 0; i < a->waiting.nlisted; i++)
      if (a->waiting.missing[i] != b->waiting.missing[i])
        return false;
    return true;
  case LWSI_MSG_RELEASE:
    if (a->release.size != b->release.size || a->release.nmembers != b->release.nmembers)
      return false;
    for (uint32_t i = 0; i < a->release.nmembers; i++) {
      const struct lwsi_wire_member *x = &a->release.members[i], *y = &b->release.members[i];
      if (x->rank != y->rank || strcmp(x->addr, y->addr) != 0 || strcmp(x->pod, y->pod) != 0)
        return false;
    }
    return true;
  case LWSI_MSG_FAIL:
    return strcmp(a->fail.reason, b->fail.reason) == 0;
  case LWSI_MSG_HB:
    return a->hb.seq == b->hb.seq && a->hb.ts == b->hb.ts && a->hb.has_echo == b->hb.has_echo &&
           (!a->hb.has_echo || (a->hb.echo == b->hb.echo && a->hb.held == b->hb.held)) &&
           strcmp(a->hb.child, b->hb.child) == 0 && a->hb.upstream == b->hb.upstream &&
           a->hb.has_health == b->hb.has_health &&
           (!a->hb.has_health ||
            (a->hb.upstream_on == b->hb.upstream_on && a->hb.upstream_age == b->hb.upstream_age &&
             strcmp(a->hb.upstream_error, b->hb.upstream_error) == 0 &&
             a->hb.stopping == b->hb.stopping));
  case LWSI_MSG_LOST:
    return a->lost.rank == b->lost.rank && strcmp(a->lost.reason, b->lost.reason) == 0;
  case LWSI_MSG_BYE:
    return strcmp(a->bye.reason, b->bye.reason) == 0;
  case LWSI_MSG_APP:
    /* Data is a pointer: a message built by hand may leave it NULL. */
    return strcmp(a->app.kind, b->app.kind) == 0 && a->app.data != NULL &&
           b->app.data != NULL && strcmp(a->app.data, b->app.data) == 0;
  default:
    return false;
  }
}

#endif
