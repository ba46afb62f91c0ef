// What benches/generate's drivers share with crates/generate/src/engine.rs: a
// CPU model and a context with the engine's parameters (n_ctx tokens per
// sequence, n_seq sequences, one n_ctx-token batch, 512-token micro-batches),
// and llama.cpp's info logs kept quiet.
#pragma once

#include "llama.h"

#include <cstdint>
#include <cstdio>

static void engine_quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

// Loads `model_path` and creates the engine's context; false (with a message) on failure.
static bool engine_context(const char * model_path, int n_ctx, int n_seq, int threads, llama_model ** model,
                           llama_context ** ctx) {
    llama_log_set(engine_quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    *model = llama_model_load_from_file(model_path, mp);
    if (!*model) {
        fprintf(stderr, "%s: cannot load the model\n", model_path);
        return false;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (n_ctx * n_seq);
    cp.n_batch = (uint32_t) n_ctx;
    cp.n_ubatch = (uint32_t) (n_ctx < 512 ? n_ctx : 512);
    cp.n_seq_max = (uint32_t) n_seq;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    *ctx = llama_init_from_model(*model, cp);
    if (!*ctx) {
        fprintf(stderr, "cannot create a context\n");
        return false;
    }
    return true;
}
