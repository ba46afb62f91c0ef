// The ideal batch for `make bench-generate-ideal`, in the spirit of llama.cpp's
// batched bench: for each NPL, NPL sequences each with an NPP-token prompt are
// decoded in one batch (split into n_batch-sized llama_decode calls, as the
// engine does), then NTG steps of NPL tokens, one per sequence. No sampling,
// grammar or I/O: the engine's best case for prompts of that length. Compiled
// against the llama.cpp that llama-cpp-sys-2 vendors and linked with the static
// libraries of the same cargo build (benches/generate-ideal.sh).
//
//   ideal_batch MODEL N_CTX_PER_SEQ THREADS NPP NTG NPL [NPL ...]
//
// Prints one JSON line per NPL: prompt and generated tokens, seconds and tok/s.
#include "engine_context.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>


// Any token costs the same to decode; keep ids inside the vocabulary.
static llama_token token_at(int pos, int n_vocab) {
    return (llama_token) (pos * 7919 % (n_vocab - 1000) + 500);
}

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL N_CTX_PER_SEQ THREADS NPP NTG NPL [NPL ...]\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    const int n_ctx = atoi(argv[2]);
    const int threads = atoi(argv[3]);
    const int npp = atoi(argv[4]);
    const int ntg = atoi(argv[5]);
    std::vector<int> npls;
    int max_npl = 0;
    for (int i = 6; i < argc; i++) {
        const int npl = atoi(argv[i]);
        if (npl <= 0) {
            fprintf(stderr, "NPL must be positive: %s\n", argv[i]);
            return 2;
        }
        npls.push_back(npl);
        max_npl = npl > max_npl ? npl : max_npl;
    }
    if (n_ctx <= 0 || threads <= 0 || npp <= 0 || ntg <= 0 || npp + ntg > n_ctx) {
        fprintf(stderr, "N_CTX_PER_SEQ, THREADS, NPP and NTG must be positive, NPP + NTG at most N_CTX_PER_SEQ\n");
        return 2;
    }

    // The engine's context parameters, sized for the largest NPL.
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    if (!engine_context(model_path, n_ctx, max_npl, threads, &model, &ctx)) {
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_batch batch = llama_batch_init(n_ctx, 0, 1);
    llama_memory_t mem = llama_get_memory(ctx);

    // add(seq, pos, want_logits) appends one token; flush() decodes what is queued.
    double decode_s = 0.0;
    auto flush = [&]() -> bool {
        if (batch.n_tokens == 0) {
            return true;
        }
        auto t0 = std::chrono::steady_clock::now();
        const int rc = llama_decode(ctx, batch);
        decode_s += seconds_since(t0);
        batch.n_tokens = 0;
        if (rc != 0) {
            fprintf(stderr, "llama_decode failed (%d)\n", rc);
        }
        return rc == 0;
    };
    auto add = [&](int seq, int pos, bool logits) -> bool {
        if (batch.n_tokens == n_ctx && !flush()) {
            return false;
        }
        const int k = batch.n_tokens++;
        batch.token[k] = token_at(pos, n_vocab);
        batch.pos[k] = pos;
        batch.n_seq_id[k] = 1;
        batch.seq_id[k][0] = seq;
        batch.logits[k] = logits;
        return true;
    };

    for (const int npl : npls) {
        llama_memory_clear(mem, true);
        // Prompts: NPL × NPP tokens, as few calls as n_batch allows.
        decode_s = 0.0;
        for (int s = 0; s < npl; s++) {
            for (int p = 0; p < npp; p++) {
                if (!add(s, p, p == npp - 1)) {
                    return 1;
                }
            }
        }
        if (!flush()) {
            return 1;
        }
        const double prompt_s = decode_s;
        // Generation: NTG steps of one token per sequence.
        decode_s = 0.0;
        for (int t = 0; t < ntg; t++) {
            for (int s = 0; s < npl; s++) {
                if (!add(s, npp + t, true)) {
                    return 1;
                }
            }
            if (!flush()) {
                return 1;
            }
        }
        const double gen_s = decode_s;
        const long long pt = (long long) npl * npp, gt = (long long) npl * ntg;
        printf("{\"npl\": %d, \"npp\": %d, \"ntg\": %d, \"threads\": %d, \"prompt_tokens\": %lld, \"prompt_seconds\": %.4f, "
               "\"prompt_tok_s\": %.2f, \"generated_tokens\": %lld, \"generate_seconds\": %.4f, \"generated_tok_s\": %.2f}\n",
               npl, npp, ntg, threads, pt, prompt_s, pt / prompt_s, gt, gen_s, gt / gen_s);
        fflush(stdout);
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
