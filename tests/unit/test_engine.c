/* The engine table: every row complete, the names unique, the argv scanner
 * as argparse reads the engines' flags, the data-parallel rule, the refused
 * flags, and the health URL each preset gives. A pure module: no loop. */
#include "lwsinit/engine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static bool list_has(const char *const *list, const char *s)
{
  for (; *list != NULL; list++)
    if (strcmp(*list, s) == 0)
      return true;
  return false;
}

/* The first of a '|'-separated list of spellings. */
static const char *first_spelling(const char *spec, char *buf, size_t len)
{
  snprintf(buf, len, "%s", spec);
  char *bar = strchr(buf, '|');
  if (bar != NULL)
    *bar = '\0';
  return buf;
}

static void test_rows(void)
{
  char spell[64];
  for (int i = 0; i < LWSI_PRESET_COUNT; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    TAP_OK(e != NULL && e->id == (enum lwsi_preset)i && e->name != NULL && e->name[0] != '\0',
           "row %d: its own id and a name (%s)", i, e != NULL ? e->name : "?");
    if (e == NULL)
      continue;
    TAP_OK(e->flags != NULL && e->worker_flags != NULL && e->refused != NULL,
           "%s: every list is there, empty or not", e->name);
    /* none and mpi append nothing: mpi's COMMAND is the launcher itself. */
    bool none = e->id == LWSI_PRESET_NONE || e->id == LWSI_PRESET_MPI;
    TAP_OK(none ? (e->flags[0] == NULL && e->worker_flags[0] == NULL && e->dist_port == 0)
                : (e->flags[0] != NULL && strncmp(e->flags[0], "--", 2) == 0 &&
                   e->dist_port != 0),
           "%s: flags and a {dist_port} default, or none of them for none", e->name);
    TAP_OK(e->health_path == NULL
               ? e->health_port == 0 && e->health_port_flag == NULL && !e->health_on_workers
               : e->health_path[0] == '/' && e->health_port != 0 &&
                     e->health_port_flag != NULL && strncmp(e->health_port_flag, "--", 2) == 0,
           "%s: a health path with its port and port flag, or nothing to poll", e->name);
    TAP_OK(e->dp_local_flag == NULL ||
               list_has(e->flags, first_spelling(e->dp_local_flag, spell, sizeof(spell))),
           "%s: a data-parallel flag is one the preset appends", e->name);
    /* Every flag the preset appends is refused in COMMAND, but the
     * data-parallel size per node, which COMMAND may give. */
    const char *const *lists[2] = {e->flags, e->worker_flags};
    for (int l = 0; l < 2; l++)
      for (const char *const *f = lists[l]; *f != NULL; f++) {
        if ((*f)[0] != '-' ||
            (e->dp_local_flag != NULL && lwsi_engine_spelling(e->dp_local_flag, *f)))
          continue;
        bool found = false;
        for (const struct lwsi_engine_refusal *r = e->refused; r->flag != NULL; r++)
          found |= r->value == NULL && lwsi_engine_spelling(r->flag, *f);
        TAP_OK(found, "%s: %s in COMMAND is refused", e->name, *f);
      }
    for (const struct lwsi_engine_refusal *r = e->refused; r->flag != NULL; r++)
      TAP_OK(strncmp(r->flag, "-", 1) == 0 && r->why != NULL && r->why[0] != '\0' &&
                 strchr(r->why, '\n') == NULL,
             "%s: the refusal of %s has a reason for its one line", e->name, r->flag);
    for (int j = 0; j < i; j++)
      TAP_OK(strcmp(lwsi_engine_get((enum lwsi_preset)j)->name, e->name) != 0,
             "%s: not the name of row %d", e->name, j);
    TAP_OK(lwsi_engine_find(e->name) == e, "%s: found by its name", e->name);
  }
  TAP_OK(lwsi_engine_get(LWSI_PRESET_COUNT) == NULL, "no row past the table");
  TAP_OK(lwsi_engine_find("trtllm") == NULL && lwsi_engine_find("") == NULL,
         "an unknown name finds nothing");
  TAP_OK(lwsi_engine_get(LWSI_PRESET_VLLM)->dist_port == 29501 &&
             lwsi_engine_get(LWSI_PRESET_SGLANG)->dist_port == 20000 &&
             lwsi_engine_get(LWSI_PRESET_VLLM_DP)->dist_port == 29550,
         "the engines' own {dist_port} defaults");
  TAP_OK(list_has(lwsi_engine_get(LWSI_PRESET_VLLM)->worker_flags, "--headless") &&
             lwsi_engine_get(LWSI_PRESET_VLLM_DP)->worker_flags[0] == NULL,
         "vllm workers run --headless, vllm-dp workers serve");
}

static void test_argv_find(void)
{
  const char *v = "unset";
  char *sp[] = {"e", "--port", "9", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, sp, "--port", &v) == 1 && v != NULL && strcmp(v, "9") == 0,
         "--flag v");
  char *eq[] = {"e", "--tp", "2", "--port=9", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, eq, "--port", &v) == 3 && v != NULL && strcmp(v, "9") == 0,
         "--flag=v");
  char *empty[] = {"e", "--port=", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, empty, "--port", &v) == 1 && v != NULL && v[0] == '\0',
         "--flag= gives an empty value");
  char *end[] = {"e", "--tp", "2", "--port", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, end, "--port", &v) == 3 && v == NULL,
         "a flag at the end: found, without a value");
  char *prefix[] = {"e", "--portx", "9", "--portx=8", "--por", "7", NULL};
  v = "unset";
  TAP_OK(lwsi_engine_argv_find(NULL, prefix, "--port", &v) == -ENOENT && v == NULL,
         "--portx and --por are not --port");
  char *last[] = {"e", "--port=1", "--port", "2", "--tp", "3", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, last, "--port", &v) == 2 && v != NULL && strcmp(v, "2") == 0,
         "the last one wins, as in argparse");
  char *dashes[] = {"e", "--port", "1", "--", "--port", "2", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, dashes, "--port", &v) == 1 && strcmp(v, "1") == 0,
         "nothing after -- is a flag");
  char *zero[] = {"--port", "1", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, zero, "--port", NULL) == -ENOENT, "argv[0] is the program");
  char *value[] = {"e", "--served-model-name", "--port", NULL};
  TAP_OK(lwsi_engine_argv_find(NULL, value, "--served-model-name", &v) == 1 && v != NULL &&
             strcmp(v, "--port") == 0,
         "--flag takes the next argument whatever it is");
  TAP_OK(lwsi_engine_argv_find(NULL, NULL, "--port", &v) == -ENOENT && v == NULL, "no argv");

  /* Spellings: every alias of the spec, and '_' for '-' where the
   * engine's parser takes it (vLLM), never where it does not (SGLang). */
  const struct lwsi_engine *vl = lwsi_engine_get(LWSI_PRESET_VLLM);
  const struct lwsi_engine *sg = lwsi_engine_get(LWSI_PRESET_SGLANG);
  char *alias[] = {"vllm", "-dpl", "4", NULL};
  TAP_OK(lwsi_engine_argv_find(vl, alias, "--data-parallel-size-local|-dpl", &v) == 1 &&
             strcmp(v, "4") == 0,
         "a short alias");
  char *aliaseq[] = {"vllm", "-dpl=4", NULL};
  TAP_OK(lwsi_engine_argv_find(vl, aliaseq, "--data-parallel-size-local|-dpl", &v) == 1 &&
             strcmp(v, "4") == 0,
         "a short alias with =");
  char *under[] = {"vllm", "--data_parallel_size_local", "4", "--node_rank=1", NULL};
  TAP_OK(lwsi_engine_argv_find(vl, under, "--data-parallel-size-local|-dpl", &v) == 1 &&
             strcmp(v, "4") == 0,
         "underscores for dashes, as vLLM's FlexibleArgumentParser reads them");
  TAP_OK(lwsi_engine_argv_find(vl, under, "--node-rank|-r", &v) == 3 && strcmp(v, "1") == 0,
         "underscores with =");
  TAP_OK(lwsi_engine_argv_find(sg, under, "--node-rank", &v) == -ENOENT,
         "no underscores for SGLang's plain argparse");
  TAP_OK(lwsi_engine_argv_find(NULL, under, "--node-rank", &v) == -ENOENT,
         "no underscores without an engine");
  char *near[] = {"vllm", "-dp", "2", "-dpl5", "--data-parallel-size", "3", "-d_pl", "1", NULL};
  TAP_OK(lwsi_engine_argv_find(vl, near, "--data-parallel-size-local|-dpl", &v) == -ENOENT,
         "-dp, -dpl5, --data-parallel-size and -d_pl are not -dpl");
  TAP_OK(lwsi_engine_spelling("--nnodes|-n", "-n") && lwsi_engine_spelling("--nnodes|-n", "--nnodes") &&
             !lwsi_engine_spelling("--nnodes|-n", "--nnode") &&
             !lwsi_engine_spelling("--nnodes|-n", "-"),
         "lwsi_engine_spelling: each spelling exactly");
}

static void test_dp_local(void)
{
  const struct lwsi_engine *dp = lwsi_engine_get(LWSI_PRESET_VLLM_DP);
  const struct lwsi_engine *vl = lwsi_engine_get(LWSI_PRESET_VLLM);
  char *sp[] = {"vllm", "serve", "m", "--data-parallel-size-local", "8", NULL};
  char *eq[] = {"vllm", "serve", "m", "--data-parallel-size-local=4", NULL};
  char *twice[] = {"vllm", "--data-parallel-size-local", "2", "--data-parallel-size-local", "8",
                   NULL};
  char *bad[] = {"vllm", "--data-parallel-size-local", "0", NULL};
  char *none[] = {"vllm", "serve", "m", NULL};
  TAP_OK(lwsi_engine_dp_local(dp, 0, sp) == 8 && lwsi_engine_dp_local(dp, 0, eq) == 4,
         "vllm-dp: the size per node from COMMAND");
  TAP_OK(lwsi_engine_dp_local(dp, 0, twice) == 8, "the last one, as vLLM reads it");
  TAP_OK(lwsi_engine_dp_local(dp, 2, sp) == 2, "--dp-local wins");
  TAP_OK(lwsi_engine_dp_local(dp, 0, bad) == 0 && lwsi_engine_dp_local(dp, 0, none) == 0,
         "0, or none at all: not known");
  TAP_OK(lwsi_engine_dp_local(vl, 0, sp) == 0, "vllm: no data-parallel rule");
}

/* The refused flag's index, or -1, for preset p in a group of size. */
static int refused_at(enum lwsi_preset p, unsigned size, char **argv)
{
  const struct lwsi_engine_refusal *r = NULL;
  int i = lwsi_engine_refused(lwsi_engine_get(p), size, argv, &r);
  return i >= 0 && r != NULL ? i : -1;
}

static void test_refused(void)
{
  char *ray[] = {"vllm", "serve", "m", "--distributed-executor-backend=ray", NULL};
  char *ray2[] = {"vllm", "serve", "m", "--distributed_executor_backend", "ray", NULL};
  char *mp[] = {"vllm", "serve", "m", "--distributed-executor-backend", "mp", NULL};
  char *last[] = {"vllm", "--distributed-executor-backend", "ray",
                  "--distributed-executor-backend=mp", NULL};
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, ray) == 3, "vllm: --distributed-executor-backend=ray");
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 1, ray2) == 3,
         "vllm: --distributed_executor_backend ray, standalone too");
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, mp) == -1 && refused_at(LWSI_PRESET_VLLM, 2, last) == -1,
         "vllm: mp, or ray overridden by a later mp, is fine");
  TAP_OK(refused_at(LWSI_PRESET_SGLANG, 2, ray) == -1 &&
             refused_at(LWSI_PRESET_NONE, 2, ray) == -1,
         "sglang and none do not read vLLM's flag");

  char *hyb[] = {"vllm", "serve", "m", "-dph", NULL};
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, hyb) == 3,
         "vllm: -dph in a group whose workers get --headless");
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 1, hyb) == -1, "vllm: -dph standalone (no worker)");
  char *headless[] = {"vllm", "serve", "m", "--headless", NULL};
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, headless) == 3 &&
             refused_at(LWSI_PRESET_VLLM_DP, 1, headless) == 3,
         "--headless: vllm appends it, vllm-dp's hybrid mode refuses it");

  char *dup_sg[] = {"python3", "-m", "sglang.launch_server", "--nccl-init-addr", "a:1", NULL};
  char *dup_vl[] = {"vllm", "serve", "m", "-r", "1", NULL};
  char *dup_vl2[] = {"vllm", "serve", "m", "--master_port=1", NULL};
  char *dup_dp[] = {"vllm", "serve", "m", "-dpl", "2", "-dpa", "x", NULL};
  TAP_OK(refused_at(LWSI_PRESET_SGLANG, 2, dup_sg) == 3,
         "sglang: --nccl-init-addr, the old name of --dist-init-addr");
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, dup_vl) == 3 &&
             refused_at(LWSI_PRESET_VLLM, 2, dup_vl2) == 3,
         "vllm: -r and --master_port are flags it appends");
  TAP_OK(refused_at(LWSI_PRESET_VLLM_DP, 2, dup_dp) == 5,
         "vllm-dp: -dpl is COMMAND's to give, -dpa is the preset's");
  char *after[] = {"vllm", "serve", "--", "--headless", "--nnodes", "2", NULL};
  TAP_OK(refused_at(LWSI_PRESET_VLLM, 2, after) == -1, "nothing after --");
  char *plain[] = {"vllm", "serve", "m", "--tensor-parallel-size", "8", "--port", "8001", NULL};
  for (int i = 0; i < LWSI_PRESET_COUNT; i++)
    TAP_OK(refused_at((enum lwsi_preset)i, 4, plain) == -1, "%s: an ordinary COMMAND passes",
           lwsi_engine_get((enum lwsi_preset)i)->name);
}

static void expect_url(enum lwsi_preset p, bool leader, char *const *argv, const char *want,
                       const char *what)
{
  char buf[128] = "";
  int rc = lwsi_engine_health_url(lwsi_engine_get(p), leader, argv, buf, sizeof(buf));
  if (want == NULL)
    TAP_OK(rc == -ENOENT, "%s: no polling (%d)", what, rc);
  else
    TAP_OK(rc == 0 && strcmp(buf, want) == 0, "%s: %s (%s)", what, want, buf);
}

static void test_urls(void)
{
  expect_url(LWSI_PRESET_SGLANG, true, NULL, "http://127.0.0.1:30000/health",
             "sglang leader: port 30000, /health");
  expect_url(LWSI_PRESET_SGLANG, false, NULL, "http://127.0.0.1:30000/health",
             "sglang worker: its health-only server");
  expect_url(LWSI_PRESET_VLLM, true, NULL, "http://127.0.0.1:8000/health",
             "vllm leader: port 8000, /health");
  expect_url(LWSI_PRESET_VLLM, false, NULL, NULL, "vllm worker (--headless)");
  expect_url(LWSI_PRESET_VLLM_DP, false, NULL, "http://127.0.0.1:8000/health",
             "vllm-dp worker: its own API server");
  expect_url(LWSI_PRESET_NONE, true, NULL, NULL, "preset none");

  char *sg[] = {"python3", "-m", "sglang.launch_server", "--port", "31000", NULL};
  expect_url(LWSI_PRESET_SGLANG, true, sg, "http://127.0.0.1:31000/health",
             "the engine's --port N wins over the default");
  char *vl[] = {"vllm", "serve", "m", "--port=8001", "--port", "8002", NULL};
  expect_url(LWSI_PRESET_VLLM_DP, false, vl, "http://127.0.0.1:8002/health",
             "the last --port wins, --port=N too");
  char *bad[] = {"vllm", "serve", "--port", "80x", "--", "--port", "9", NULL};
  expect_url(LWSI_PRESET_VLLM, true, bad, "http://127.0.0.1:8000/health",
             "a bad port or one after -- leaves the default");
  char *big[] = {"vllm", "serve", "--port=65536", NULL};
  expect_url(LWSI_PRESET_VLLM, true, big, "http://127.0.0.1:8000/health",
             "a port past 65535 leaves the default");
  expect_url(LWSI_PRESET_VLLM, false, vl, NULL, "vllm worker with a --port");
  char buf[10];
  TAP_OK(lwsi_engine_health_url(lwsi_engine_get(LWSI_PRESET_SGLANG), true, NULL, buf,
                                sizeof(buf)) == -ENOSPC,
         "a short buffer: -ENOSPC");
}

/* The Ray presets: a service on every member, the executor's flag for
 * the leader's COMMAND, GCS on 6379, and the flags that contradict them. */
static void test_ray_rows(void)
{
  const struct lwsi_engine *v = lwsi_engine_find("vllm-ray");
  const struct lwsi_engine *s = lwsi_engine_find("sglang-ray");
  TAP_OK(v != NULL && v->id == LWSI_PRESET_VLLM_RAY && v->service != NULL,
         "vllm-ray is a row with a service");
  TAP_OK(s != NULL && s->id == LWSI_PRESET_SGLANG_RAY && s->service != NULL,
         "sglang-ray is a row with a service");
  if (v == NULL || s == NULL)
    return;
  TAP_OK(v->dist_port == 6379 && s->dist_port == 6379, "{dist_port} is Ray's GCS port, 6379");
  TAP_OK(v->flags[0] != NULL && strcmp(v->flags[0], "--distributed-executor-backend") == 0 &&
             strcmp(v->flags[1], "ray") == 0 && v->flags[2] == NULL,
         "vllm-ray appends --distributed-executor-backend ray");
  TAP_OK(s->flags[0] != NULL && strcmp(s->flags[0], "--use-ray") == 0 && s->flags[1] == NULL,
         "sglang-ray appends --use-ray");
  TAP_OK(list_has(v->service->leader_argv, "--head") && list_has(v->service->leader_argv, "--block"),
         "the leader runs ray start --head --block");
  TAP_OK(list_has(v->service->worker_argv, "--address") &&
             list_has(v->service->worker_argv, "--node-manager-port") &&
             list_has(v->service->worker_argv, "--block"),
         "workers run ray start --address ... --node-manager-port ... --block");
  TAP_OK(v->service->node_port > 0 && v->service->missing != NULL &&
             strstr(v->service->missing, "--preset vllm") != NULL,
         "a fixed node port, and a line for a missing ray that names --preset vllm");
  TAP_OK(!v->health_on_workers && !s->health_on_workers, "workers serve no health URL");
  char *const dup[] = {"vllm", "serve", "m", "--distributed-executor-backend", "mp", NULL};
  const struct lwsi_engine_refusal *r = NULL;
  TAP_OK(lwsi_engine_refused(v, 2, dup, &r) == 3, "vllm-ray refuses a second executor flag");
  char *const rank[] = {"python3", "-m", "sglang.launch_server", "--node-rank", "1", NULL};
  TAP_OK(lwsi_engine_refused(s, 2, rank, &r) == 3, "sglang-ray refuses --node-rank");
  char *const plain[] = {"vllm", "serve", "m", "--tensor-parallel-size", "8", NULL};
  TAP_OK(lwsi_engine_refused(v, 2, plain, &r) == -ENOENT, "a plain vLLM command is fine");
  for (int i = 0; i < LWSI_PRESET_COUNT; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    bool ray = e->id == LWSI_PRESET_VLLM_RAY || e->id == LWSI_PRESET_SGLANG_RAY;
    TAP_OK((e->service != NULL) == ray, "%s: a service only for the Ray presets", e->name);
  }
}

int main(void)
{
  test_rows();
  test_ray_rows();
  test_argv_find();
  test_dp_local();
  test_refused();
  test_urls();
  return tap_done();
}
