/* batch.c: runs many models compiled by `atomc compile` in one process, for
 * tests/aot_aarch64.rs (one link and one qemu run for a whole suite).
 *
 * The test generates table.c defining `atomc_models` (one entry of function pointers per
 * model, from each model's exported C API) and `atomc_num_models`.
 * Build: aarch64-linux-gnu-gcc -static -std=c11 batch.c table.c m1.o m2.o ... -lm
 * Run:   ./batch DIR   for each model NAME reads DIR/NAME/input_<i>.bin, runs the model
 *                      once on a workspace filled with garbage, writes DIR/NAME/output_<i>.bin
 *                      and prints `ok NAME` or `fail NAME <why>`; exits 0 unless it cannot
 *                      write its results.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char* name;
    int (*run)(const void* const*, void* const*, void*);
    size_t (*workspace_size)(void);
    int (*num_inputs)(void);
    int (*num_outputs)(void);
    size_t (*input_bytes)(int);
    size_t (*output_bytes)(int);
} atomc_model;

extern const atomc_model atomc_models[];
extern const int atomc_num_models;

/* Reads exactly `bytes` bytes of `path` into a new buffer; NULL when it cannot. */
static void* read_file(const char* path, size_t bytes) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    void* p = malloc(bytes ? bytes : 1);
    size_t got = fread(p, 1, bytes, f);
    fclose(f);
    if (got != bytes) { free(p); return NULL; }
    return p;
}

/* Runs model `m` on the files of DIR/<name>; 0 on success, else prints why. */
static int run_one(const atomc_model* m, const char* dir) {
    char path[4096];
    int ni = m->num_inputs(), no = m->num_outputs(), status = 0;
    const void** in = calloc(ni + 1, sizeof(void*));
    void** out = calloc(no + 1, sizeof(void*));
    for (int i = 0; i < ni; i++) {
        snprintf(path, sizeof path, "%s/%s/input_%d.bin", dir, m->name, i);
        in[i] = read_file(path, m->input_bytes(i));
        if (!in[i]) { printf("fail %s cannot read %s\n", m->name, path); status = 1; }
    }
    for (int i = 0; i < no; i++) {
        size_t n = m->output_bytes(i);
        out[i] = malloc(n ? n : 1);
        memset(out[i], 0xCD, n);
    }
    size_t ws = (m->workspace_size() + 63) / 64 * 64;
    void* workspace = aligned_alloc(64, ws ? ws : 64);
    memset(workspace, 0xAB, ws);
    if (status == 0) {
        int rc = m->run(in, out, workspace);
        if (rc != 0) { printf("fail %s run returned %d\n", m->name, rc); status = 1; }
    }
    for (int i = 0; status == 0 && i < no; i++) {
        size_t n = m->output_bytes(i);
        snprintf(path, sizeof path, "%s/%s/output_%d.bin", dir, m->name, i);
        FILE* f = fopen(path, "wb");
        if (!f || fwrite(out[i], 1, n, f) != n) { printf("fail %s cannot write %s\n", m->name, path); status = 2; }
        if (f) fclose(f);
    }
    if (status == 0) printf("ok %s\n", m->name);
    for (int i = 0; i < ni; i++) free((void*)in[i]);
    for (int i = 0; i < no; i++) free(out[i]);
    free(in);
    free(out);
    free(workspace);
    return status;
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s DIR\n", argv[0]); return 2; }
    int rc = 0;
    for (int k = 0; k < atomc_num_models; k++) {
        if (run_one(&atomc_models[k], argv[1]) == 2) rc = 2;
        fflush(stdout);
    }
    return rc;
}
