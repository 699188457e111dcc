/* A small MPI program for tests/acceptance/test_mpi.py: every rank
 * contributes rank+1, MPI_Allreduce sums them, and every rank prints the
 * sum with its rank and host, so that the test can check each rank's
 * answer and where it ran. */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long mine = rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  char host[256] = "";
  gethostname(host, sizeof(host));
  printf("rank %d of %d on %s: sum %ld\n", rank, size, host, sum);
  fflush(stdout);
  if (argc > 1)
    sleep(3600); /* the test's "hang" mode: the job stays up until killed */
  MPI_Finalize();
  return 0;
}
