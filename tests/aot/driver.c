/* driver.c: runs a model compiled by `atomc compile` from raw files, for tests/aot.rs.
 *
 * Build: cc -std=c11 -include OUT/<name>.h -DATOMC_NAME=<name> driver.c OUT/<name>.o -lm
 * Run:   ./drv DIR   reads DIR/input_<i>.bin (the raw bytes of input i) and writes
 *                    DIR/output_<i>.bin. It runs the model twice on one workspace (filled
 *                    with garbage first) and fails unless both runs agree bit for bit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define API(x) CAT(ATOMC_NAME, x)

static void* read_file(const char* path, size_t bytes) {
    FILE* f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    void* p = malloc(bytes ? bytes : 1);
    if (fread(p, 1, bytes, f) != bytes) { fprintf(stderr, "%s is shorter than %zu bytes\n", path, bytes); exit(2); }
    fclose(f);
    return p;
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s DIR\n", argv[0]); return 2; }
    int ni = API(num_inputs)(), no = API(num_outputs)();
    const void** in = calloc(ni + 1, sizeof(void*));
    void** out = calloc(no + 1, sizeof(void*));
    void** again = calloc(no + 1, sizeof(void*));
    char path[4096];
    for (int i = 0; i < ni; i++) {
        snprintf(path, sizeof path, "%s/input_%d.bin", argv[1], i);
        in[i] = read_file(path, API(input_bytes)(i));
    }
    for (int i = 0; i < no; i++) {
        size_t n = API(output_bytes)(i);
        out[i] = malloc(n ? n : 1);
        again[i] = malloc(n ? n : 1);
        memset(out[i], 0xCD, n);
        memset(again[i], 0x5A, n);
    }
    size_t ws = (API(workspace_size)() + 63) / 64 * 64;
    void* workspace = aligned_alloc(64, ws ? ws : 64);
    memset(workspace, 0xAB, ws);
    int rc = API(run)(in, out, workspace);
    if (rc != 0) { fprintf(stderr, "run failed with code %d\n", rc); return 1; }
    rc = API(run)(in, again, workspace);
    if (rc != 0) { fprintf(stderr, "second run failed with code %d\n", rc); return 1; }
    for (int i = 0; i < no; i++) {
        size_t n = API(output_bytes)(i);
        if (memcmp(out[i], again[i], n) != 0) {
            fprintf(stderr, "output %d (%s) differs between two runs\n", i, API(output_name)(i));
            return 1;
        }
        snprintf(path, sizeof path, "%s/output_%d.bin", argv[1], i);
        FILE* f = fopen(path, "wb");
        if (!f || fwrite(out[i], 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); return 2; }
        fclose(f);
        printf("output %d: %s dtype %d rank %d [", i, API(output_name)(i), API(output_dtype)(i), API(output_rank)(i));
        for (int d = 0; d < API(output_rank)(i); d++) printf(d ? ", %lld" : "%lld", (long long)API(output_shape)(i)[d]);
        printf("]\n");
    }
    if (API(input_name)(ni) != NULL || API(output_dtype)(no) != -1) {
        fprintf(stderr, "descriptions out of range are not NULL / -1\n");
        return 1;
    }
    return 0;
}
