// Standalone timing of the CPU GEMM (lumen_linear, f16 weights) outside the executor, for A/B work
// on the kernels on a shared machine: every shape runs `reps` times on `threads` pthreads (task t
// of threads, as the executor splits it) and the best and median wall times are printed. The best
// run is the one least disturbed by other processes; compare it with a peer's best from the same
// moment (tools/bench_vs_numpy.py --stat best).
//
//   clang -O3 -ISources/CLumenCPU/include -D_GNU_SOURCE tools/kernel_harness.c \
//       Sources/CLumenCPU/*.c -lm -lpthread -o /tmp/kernel_harness
//   LUMEN_CPU_ISA=avx2 [LUMEN_CPU_L2_KIB=512] /tmp/kernel_harness [threads] [reps] [attention]
// With "attention": the fused attention kernel at SD's shapes (batch 1, 8 heads) instead.
// With "conv": 3x3 stride-1 convolutions (f16 weights, bias) at TAESD's and the VAE's shapes
// (LUMEN_CONV_DIRECT=0 forces the implicit GEMM, 2 the direct kernel, for A/B runs).
// With "winograd": the UNet's and the VAE's 3x3 shapes through lumen_conv2d (as the executor
// would run them without Winograd) against the Winograd path with F(4x4) and F(2x2) tiles (phases
// separated by a barrier, as the thread pool runs them), with each one's error against a float64
// reference at 4096 sampled outputs (max |error| / max |reference|). WG_FUSED=0|1 sets the fused
// mode (lumen_cpu_set_winograd_fused) for A/B runs.
#include "lumen_cpu.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    int attention;
    int conv;  // C, O, H (= W) in M, N, K
    int64_t lq, lk, dh;
    const float *x;
    const uint16_t *w;
    float *y;
    int64_t M, N, K;
    int task, ntasks;
    pthread_barrier_t *start, *end;
    int reps;
    const lumen_winograd_plan *wg;  // Winograd phases instead of lumen_conv2d
    float *scratch;
    pthread_barrier_t *phase;
} job;

static void *worker(void *p) {
    job *j = (job *)p;
    for (int r = 0; r < j->reps; ++r) {
        pthread_barrier_wait(j->start);
        if (j->wg) {
            const int64_t n = lumen_winograd_phases(j->wg);
            for (int64_t ph = 0; ph < n; ++ph) {
                lumen_winograd_run_phase(j->wg, ph, j->x, j->w, LUMEN_DT_F16, j->x, j->y, NULL, j->scratch,
                                         j->task, j->ntasks);
                pthread_barrier_wait(j->phase);
            }
        } else if (j->conv) {
            lumen_conv2d(j->x, j->dh, j->M, j->K, j->K, j->w, LUMEN_DT_F16, j->x, j->y, j->N, 3, 3, 1, 1,
                         1, 1, j->K, j->K, j->task, j->ntasks);
        } else if (j->attention) {
            const int64_t w = 8 * j->dh;  // q, k, v and out: [L, 8 heads * dh] in one buffer each
            lumen_attention(j->x, w, j->x + j->lq * w, w, j->x + (j->lq + j->lk) * w, w, j->y, w, 1, j->lq,
                            j->lk, 8, j->dh, 1.0f / 6.3245553f, 0, j->task, j->ntasks);
        } else {
            lumen_linear(j->x, j->K, j->w, LUMEN_DT_F16, j->K, NULL, j->y, j->N, j->M, j->N, j->K, 0, j->task,
                         j->ntasks);
        }
        pthread_barrier_wait(j->end);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}


// Runs `proto` on `threads` pthreads (task t of threads) warmup + reps times; sets the best and
// the median wall time of the timed runs.
static void time_jobs(job proto, int threads, int reps, int warmup, double *best, double *median) {
    if (threads > 64) threads = 64;
    pthread_barrier_t start, end, phase;
    pthread_barrier_init(&phase, NULL, (unsigned)threads);
    proto.phase = &phase;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&end, NULL, (unsigned)threads + 1);
    job jobs[64];
    pthread_t tid[64];
    const int total = reps + warmup;
    for (int t = 0; t < threads; ++t) {
        jobs[t] = proto;
        jobs[t].task = t;
        jobs[t].ntasks = threads;
        jobs[t].start = &start;
        jobs[t].end = &end;
        jobs[t].reps = total;
        pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    double *times = malloc(sizeof(double) * total);
    for (int r = 0; r < total; ++r) {
        double t0 = now();
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&end);
        times[r] = now() - t0;
    }
    for (int t = 0; t < threads; ++t) pthread_join(tid[t], NULL);
    qsort(times + warmup, (size_t)reps, sizeof(double), cmp);
    *best = times[warmup];
    *median = times[warmup + reps / 2];
    free(times);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&end);
    pthread_barrier_destroy(&phase);
}

static void attention_shapes(int threads, int reps) {
    const int64_t shapes[][3] = {{4096, 4096, 40}, {4096, 77, 40}, {1024, 1024, 80}};
    printf("attention, isa %s, %d threads, %d runs: Lq x Lk x Dh x 8 heads, best GFLOP/s, median GFLOP/s\n",
           lumen_isa_name(lumen_cpu_isa()), threads, reps);
    const char *only = getenv("ATT_ONLY");  // index of one shape
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        if (only && atoi(only) != (int)s) continue;
        const int64_t lq = shapes[s][0], lk = shapes[s][1], dh = shapes[s][2], w = 8 * dh;
        float *x = malloc(sizeof(float) * (lq + 2 * lk) * w), *y = malloc(sizeof(float) * lq * w);
        srand(2);
        for (int64_t i = 0; i < (lq + 2 * lk) * w; ++i) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        double best, median;
        time_jobs((job){1, 0, lq, lk, dh, x, NULL, y, 0, 0, 0, 0, 1, NULL, NULL, 0}, threads, reps, 1, &best, &median);
        const double flops = 4.0 * (double)lq * (double)lk * (double)dh * 8.0;
        printf("%lldx%lldx%lldx8h %.1f %.1f\n", (long long)lq, (long long)lk, (long long)dh, flops / best * 1e-9,
               flops / median * 1e-9);
        fflush(stdout);
        free(x); free(y);
    }
}

// Random input x [B, C, H, H] and f16 weights w [O, C, 3, 3] (wf: their f32 values before rounding),
// and an output buffer y [B, O, H, H].
static void conv_data(int64_t B, int64_t C, int64_t O, int64_t H, float **x, float **y, float **wf, uint16_t **w) {
    *x = malloc(sizeof(float) * B * C * H * H);
    *y = malloc(sizeof(float) * B * O * H * H);
    *wf = malloc(sizeof(float) * O * C * 9);
    *w = malloc(sizeof(uint16_t) * O * C * 9);
    srand(3);
    for (int64_t i = 0; i < B * C * H * H; ++i) (*x)[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < O * C * 9; ++i) (*wf)[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    lumen_f32_to_f16(*wf, *w, O * C * 9);
}

static void conv_shapes(int threads, int reps) {
    // C, O, H = W, batch (TAESD's levels and RGB head, the VAE decoder's levels, the UNet's at 512
    // with guidance)
    const int64_t shapes[][4] = {{64, 64, 512, 1},  {64, 64, 256, 1},   {64, 64, 64, 1},
                                 {64, 3, 512, 1},   {4, 64, 64, 1},     {128, 128, 512, 1},
                                 {256, 256, 256, 1}, {512, 512, 128, 1}, {512, 512, 64, 1},
                                 {320, 320, 64, 2}, {640, 640, 32, 2},  {1280, 1280, 16, 2}};
    const char *only = getenv("CONV_ONLY");  // index of one shape
    printf("conv 3x3, isa %s, %d threads, %d runs: C -> O @ HxW, best GFLOP/s, median GFLOP/s\n",
           lumen_isa_name(lumen_cpu_isa()), threads, reps);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        if (only && atoi(only) != (int)s) continue;
        const int64_t C = shapes[s][0], O = shapes[s][1], H = shapes[s][2], B = shapes[s][3];
        float *x, *y, *wf;
        uint16_t *w;
        conv_data(B, C, O, H, &x, &y, &wf, &w);
        double best, median;
        time_jobs((job){0, 1, 0, 0, B, x, w, y, C, O, H, 0, 1, NULL, NULL, 0}, threads, reps, 1, &best, &median);
        const double flops = 2.0 * (double)B * (double)O * (double)C * 9.0 * (double)H * (double)H;
        printf("%lldx%lld->%lld@%lld %.1f %.1f\n", (long long)B, (long long)C, (long long)O, (long long)H, flops / best * 1e-9,
               flops / median * 1e-9);
        fflush(stdout);
        free(x); free(y); free(wf); free(w);
    }
}

// max |y - ref| / max |ref| over 4096 sampled outputs; ref in float64 (bias = x[0..O), as the
// timed calls pass it).
static double conv_error(const float *x, const float *wf, const float *y, int64_t B, int64_t C, int64_t O,
                         int64_t H) {
    double maxd = 0, maxr = 0;
    srand(7);
    for (int s = 0; s < 4096; ++s) {
        const int64_t b = rand() % B, o = rand() % O, i = rand() % H, k = rand() % H;
        double acc = x[o];
        for (int64_t c = 0; c < C; ++c)
            for (int dy = 0; dy < 3; ++dy)
                for (int dx = 0; dx < 3; ++dx) {
                    const int64_t yy = i + dy - 1, xx = k + dx - 1;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= H) continue;
                    acc += (double)x[((b * C + c) * H + yy) * H + xx] * (double)wf[((o * C + c) * 3 + dy) * 3 + dx];
                }
        const double d = fabs(acc - (double)y[((b * O + o) * H + i) * H + k]);
        if (d > maxd) maxd = d;
        if (fabs(acc) > maxr) maxr = fabs(acc);
    }
    return maxd / maxr;
}

static void winograd_shapes(int threads, int reps) {
    const char *fused = getenv("WG_FUSED");  // -1 (default choice), 0 or 1: lumen_cpu_set_winograd_fused
    if (fused) lumen_cpu_set_winograd_fused(atoi(fused));
    // C, O, H = W, batch: the SD 1.5 UNet's 3x3 convolutions at 512 with guidance, the VAE's
    const int64_t shapes[][4] = {{320, 320, 64, 2},   {640, 320, 64, 2},  {960, 320, 64, 2},
                                 {640, 640, 64, 2},   {640, 640, 32, 2},  {1920, 640, 32, 2},
                                 {1280, 1280, 32, 2}, {1280, 1280, 16, 2}, {2560, 1280, 16, 2},
                                 {1280, 1280, 8, 2},  {2560, 1280, 8, 2}, {512, 512, 64, 1},  {512, 512, 128, 1},
                                 {256, 256, 256, 1},  {128, 128, 512, 1}, {64, 64, 256, 1},  {64, 64, 512, 1},
                                 {64, 64, 64, 1},     {64, 64, 128, 1},   {128, 128, 256, 1}};
    const char *only = getenv("CONV_ONLY");
    printf("winograd, isa %s, %d threads, %d runs: C -> O @ HxW, GFLOP/s (direct-conv FLOPs over the best time) "
           "and error for lumen_conv2d, F(6x6), F(4x4), F(2x2)\n",
           lumen_isa_name(lumen_cpu_isa()), threads, reps);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        if (only && atoi(only) != (int)s) continue;
        const int64_t C = shapes[s][0], O = shapes[s][1], H = shapes[s][2], B = shapes[s][3];
        float *x, *y, *wf;
        uint16_t *w;
        conv_data(B, C, O, H, &x, &y, &wf, &w);
        lumen_convert_to_f32(w, LUMEN_DT_F16, wf, O * C * 9);  // the reference uses the stored weights
        const double flops = 2.0 * (double)B * (double)O * (double)C * 9.0 * (double)H * (double)H;
        printf("%lldx%lld->%lld@%lld", (long long)B, (long long)C, (long long)O, (long long)H);
        double best, median;
        const int only_m = getenv("WG_ONLY_M") ? atoi(getenv("WG_ONLY_M")) : 0;  // 2 or 4: that tile size alone (perf)
        if (!only_m) {
            time_jobs((job){0, 1, 0, 0, B, x, w, y, C, O, H, 0, 1, NULL, NULL, 0, NULL, NULL, NULL}, threads, reps, 1,
                      &best, &median);
            printf("  conv2d %.1f (%.1e)", flops / best * 1e-9, conv_error(x, wf, y, B, C, O, H));
        }
        for (int m = 6; m >= 2; m -= 2) {
            if (only_m && m != only_m) continue;
            lumen_winograd_plan plan;
            if (!lumen_winograd_plan_make(B, C, H, H, O, 3, 3, 1, 1, 1, 1, m, &plan)) {
                printf("  F(%d) -", m);
                continue;
            }
            float *scratch = NULL;
            if (posix_memalign((void **)&scratch, 64, sizeof(float) * (size_t)plan.scratch_floats)) abort();
            memset(y, 0, sizeof(float) * B * O * H * H);
            time_jobs((job){0, 1, 0, 0, B, x, w, y, C, O, H, 0, 1, NULL, NULL, 0, &plan, scratch, NULL}, threads,
                      reps, 1, &best, &median);
            if (plan.fused)
                printf("  F(%d) %.1f (%.1e; fused, %lld tiles)", m, flops / best * 1e-9, conv_error(x, wf, y, B, C, O, H),
                       (long long)plan.tb_tiles);
            else
                printf("  F(%d) %.1f (%.1e; %lldx%lld blocks, %.0f MB)", m, flops / best * 1e-9,
                       conv_error(x, wf, y, B, C, O, H), (long long)plan.n_tblocks, (long long)plan.n_oblocks,
                       (double)plan.scratch_floats * 4e-6);
            free(scratch);
        }
        printf("\n");
        fflush(stdout);
        free(x); free(y); free(wf); free(w);
    }
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 30;
    if (argc > 3 && !strcmp(argv[3], "conv")) {
        conv_shapes(threads, reps);
        return 0;
    }
    if (argc > 3 && !strcmp(argv[3], "winograd")) {
        winograd_shapes(threads, reps);
        return 0;
    }
    if (argc > 3 && !strcmp(argv[3], "attention")) {
        attention_shapes(threads, reps);
        return 0;
    }
    int64_t shapes[][3] = {{4096, 320, 320}, {4096, 1280, 320}, {4096, 320, 1280}, {154, 768, 768}};
    size_t nshapes = sizeof shapes / sizeof shapes[0];
    const char *one = getenv("GEMM_SHAPE");  // "MxNxK": that shape alone
    if (one) {
        long long m, n, k;
        if (sscanf(one, "%lldx%lldx%lld", &m, &n, &k) != 3 || m < 1 || n < 1 || k < 1) {
            fprintf(stderr, "GEMM_SHAPE: expected MxNxK, got %s\n", one);
            return 1;
        }
        shapes[0][0] = m, shapes[0][1] = n, shapes[0][2] = k;
        nshapes = 1;
    }
    printf("isa %s, L2 %lld KiB, %d threads, %d runs: M x N x K, best GFLOP/s, median GFLOP/s\n",
           lumen_isa_name(lumen_cpu_isa()), (long long)(lumen_cpu_l2_bytes() / 1024), threads, reps);
    for (size_t s = 0; s < nshapes; ++s) {
        const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * M * N);
        float *wf = malloc(sizeof(float) * N * K);
        uint16_t *w = malloc(sizeof(uint16_t) * N * K);
        srand(1);
        for (int64_t i = 0; i < M * K; ++i) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        for (int64_t i = 0; i < N * K; ++i) wf[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        lumen_f32_to_f16(wf, w, N * K);
        double best, median;
        time_jobs((job){0, 0, 0, 0, 0, x, w, y, M, N, K, 0, 1, NULL, NULL, 0}, threads, reps, 2, &best, &median);
        const double flops = 2.0 * (double)M * (double)N * (double)K;
        printf("%lldx%lldx%lld %.1f %.1f\n", (long long)M, (long long)N, (long long)K, flops / best * 1e-9,
               flops / median * 1e-9);
        fflush(stdout);
        free(x); free(y); free(wf); free(w);
    }
    return 0;
}
