// The engine's ceiling for `make bench-generate`: replays the batches that
// `tailforge generate` decoded (a trace written with
// TAILFORGE_GENERATE_TRACE=<file>) with bare llama_decode calls — same
// context parameters, same batch shapes, same sequence ids and positions,
// same KV clears — and no sampling, grammar, validation or I/O. Compiled
// against the llama.cpp that llama-cpp-sys-2 vendors and linked with the
// static libraries of the same cargo build (benches/generate.sh).
//
//   ceiling MODEL TRACE N_CTX_PER_SEQ PARALLEL THREADS
//
// Prints one JSON line: decode seconds, batches, prompt and generated tokens.
#include "engine_context.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

struct Segment {
    int seq;
    int pos;
    int count;
};

struct Op {
    bool clear;
    bool copy;
    int seq;                     // for a clear; the destination of a copy
    int from;                    // for a copy
    std::vector<Segment> segs;   // for a decode
};


int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL TRACE N_CTX_PER_SEQ PARALLEL THREADS\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    const char * trace_path = argv[2];
    const int n_ctx = atoi(argv[3]);
    const int parallel = atoi(argv[4]);
    const int threads = atoi(argv[5]);
    if (n_ctx <= 0 || parallel <= 0 || threads <= 0) {
        fprintf(stderr, "N_CTX_PER_SEQ, PARALLEL and THREADS must be positive\n");
        return 2;
    }

    std::vector<Op> ops;
    std::ifstream in(trace_path);
    if (!in) {
        fprintf(stderr, "%s: cannot read the trace\n", trace_path);
        return 2;
    }
    std::string line;
    long long prompt_tokens = 0, generated_tokens = 0;
    int max_seq = parallel - 1;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string kind;
        ls >> kind;
        Op op{};
        if (kind == "C") {
            op.clear = true;
            ls >> op.seq;
        } else if (kind == "K") {
            // generate.share_prefix: the prefix sequence copied into an item's slot.
            op.copy = true;
            ls >> op.from >> op.seq;
        } else if (kind == "D") {
            int n = 0;
            ls >> n;
            std::string seg;
            while (ls >> seg) {
                Segment s{};
                if (sscanf(seg.c_str(), "%d:%d:%d", &s.seq, &s.pos, &s.count) != 3) {
                    fprintf(stderr, "%s: bad segment %s\n", trace_path, seg.c_str());
                    return 2;
                }
                if (s.count == 1 && s.pos > 0) {
                    generated_tokens += 1;
                } else {
                    prompt_tokens += s.count;
                }
                op.segs.push_back(s);
                max_seq = std::max(max_seq, s.seq);
            }
        } else {
            continue;
        }
        ops.push_back(op);
    }

    // With a shared prefix the engine decodes it into one more sequence.
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    if (!engine_context(model_path, n_ctx, max_seq + 1, threads, &model, &ctx)) {
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_batch batch = llama_batch_init(n_ctx, 0, 1);
    llama_memory_t mem = llama_get_memory(ctx);

    double decode_s = 0.0;
    long long batches = 0;
    for (const Op & op : ops) {
        if (op.clear) {
            llama_memory_seq_rm(mem, op.seq, -1, -1);
            continue;
        }
        if (op.copy) {
            llama_memory_seq_cp(mem, op.from, op.seq, -1, -1);
            continue;
        }
        batch.n_tokens = 0;
        for (const Segment & s : op.segs) {
            for (int i = 0; i < s.count; i++) {
                const int k = batch.n_tokens++;
                // Any token costs the same to decode; keep ids inside the vocabulary.
                batch.token[k] = (llama_token) ((s.pos + i) * 7919 % (n_vocab - 1000) + 500);
                batch.pos[k] = s.pos + i;
                batch.n_seq_id[k] = 1;
                batch.seq_id[k][0] = s.seq;
                batch.logits[k] = (i == s.count - 1);
            }
        }
        auto t0 = std::chrono::steady_clock::now();
        const int rc = llama_decode(ctx, batch);
        decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rc != 0) {
            fprintf(stderr, "llama_decode failed (%d) at batch %lld\n", rc, batches);
            return 1;
        }
        batches++;
    }
    printf("{\"decode_seconds\": %.4f, \"batches\": %lld, \"prompt_tokens\": %lld, \"generated_tokens\": %lld, "
           "\"generated_tok_s\": %.2f}\n",
           decode_s, batches, prompt_tokens, generated_tokens, decode_s > 0 ? generated_tokens / decode_s : 0.0);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
