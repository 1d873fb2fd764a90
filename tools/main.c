/* main.c - the loco command line: global options, then the command's
 * function from the table below (each command lives in its own file). Uses
 * only the public header. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: loco COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  info MODEL [--json]                 architecture, parameters, FLOPs, memory\n"
    "  init OUT_DIR --config CONFIG.json [--seed N] [--dtype f32|f16]\n"
    "                                      write a random-initialised checkpoint folder\n"
    "  eps MODEL --x X.safetensors --t T --out OUT.safetensors\n"
    "      [--prompt P [--negative-prompt N] [--guidance 7.5]]\n"
    "                                      eps(x, t) and x0_hat for tensor x [B,C,H,W]; a\n"
    "                                      text-to-image model: the guided eps of the prompt\n"
    "  jacobian MODEL --x X.safetensors --t T --mode jvp|vjp --in IN.safetensors\n"
    "           --out OUT.safetensors [--mask M.png | --rect y0,y1,x0,x1] [--of eps|x0]\n"
    "                                      J V (IN has V [k,C,H,W]; OUT gets JV) or U^T J\n"
    "                                      (IN has U [k,C,H,W] or [k,l]; OUT gets UJ) of\n"
    "                                      x0_hat (default) or eps, on the mask entries\n"
    "  edit MODEL --image IMG (--mask M.png | --rect y0,y1,x0,x1 | --ellipse cy,cx,ry,rx)\n"
    "       --out DIR [--t-edit 0.6] [--steps 100] [--inv-steps 100] [--rank 5]\n"
    "       [--null-rank 5] [--min-iter 10] [--max-iter 50] [--tol 1e-4] [--oversample 0]\n"
    "       [--strengths -8,8] [--directions 0] [--invert-to edit|full] [--boost-t 0]\n"
    "       [--seed 0] [--init-basis FILE] [--save-tensors] [--drop-alpha] [--resize]\n"
    "       [--zoom auto|Z]                 (strip.png's pixel blocks; auto: tiles >= 128 px)\n"
    "       [--prompt P [--negative-prompt N] [--guidance 7.5] [--edit-prompt E] [--edit-guidance 4]\n"
    "        [--latent Z.safetensors]]   a text-to-image model (T-LOCO): the mask covers the\n"
    "                                   decoded image; start from --image, --latent or --seed;\n"
    "                                   --edit-prompt: one text-supervised direction\n"
    "       [--settings celeba|ffhq|afhq|flowers|metfaces]  (the authors' script for a\n"
    "       dataset: t-edit, boost-t, rank, null-rank; explicit options win. Without it,\n"
    "       t-edit and boost-t are the family's: 0.6 and 0, ADM (P2) 0.7 and 0.2)\n"
    "       [--timesteps authors|leading|trailing]  (the authors' float grid, or diffusers'\n"
    "       DDIMScheduler spacing with the folder's steps_offset and set_alpha_to_one;\n"
    "       then --steps and --inv-steps count network evaluations)\n"
    "       [--json]                       LOCO Edit: local directions at x_t, edits\n"
    "  apply MODEL --directions FILE --image IMG [--image IMG2 ...] --out DIR\n"
    "       [--index 0,1] [--strengths -8,8] | [--direction FILE:INDEX:STRENGTH ...] [--zoom auto|Z]\n"
    "       [--t-edit T] [--steps N] [--inv-steps N]  (default: the recorded schedule)\n"
    "       a text-to-image model: also --latent Z / --seed S starts, [--prompt P]\n"
    "       [--negative-prompt N] [--guidance G] (default: what the edit recorded)\n"
    "                                      apply saved directions (transfer, compose)\n"
    "  serve [MODEL] [--host 127.0.0.1] [--port 8080] [--open]\n"
    "                                      the interactive editor in a browser (docs/serve.md);\n"
    "                                      MODEL defaults to models/faces32\n"
    "  convert MODEL OUT_DIR [--dtype f32|f16]\n"
    "                                      write MODEL as a folder with safetensors weights:\n"
    "                                      diffusers (config copied), or guided-diffusion\n"
    "                                      (config.json of the inferred flags); OUT.pt writes a\n"
    "                                      guided-diffusion model as a bare PyTorch checkpoint;\n"
    "                                      dtype kept unless given\n"
    "  analyze rank MODEL [--t 0.05:0.95:0.05] [--images N | --image PNG ...] --out DIR\n"
    "       [--threshold 1e-3] [--max-exact 4096] [--k 200] [--power 2] [--gen-steps 50]\n"
    "                                      numerical rank of the x0_hat Jacobian across t\n"
    "  analyze linearity MODEL [--t 0.6] [--lambda 1,2,5,10,20,40] [--directions 3]\n"
    "       [--images N | --image PNG ...] --out DIR\n"
    "                                      |f(x+lv)-f(x)| / |l J v| and their cosine\n"
    "  molrg init OUT.safetensors --n CxHxW --k K --d D [--sigma0 S] [--seed N]\n"
    "                                      a closed-form MoLRG model (usable as MODEL)\n"
    "  dataset faces --count N (--out DIR | --grid G.png) [--seed S] [--start I]\n"
    "        [--label-grid L.png] [--grid-zoom Z] [--version 2]\n"
    "                                      synthetic part-labelled 32x32 faces: PNGs,\n"
    "                                      label maps, factors.csv, parts.txt; 8-wide\n"
    "                                      contact sheets of the images / label maps;\n"
    "                                      --version 1: the first generator (jittered)\n"
    "  dataset fashion-mnist --count N (--out DIR | --grid G.png) [--split train|test]\n"
    "        [--dir D] [--grid-zoom Z]     Fashion-MNIST padded to 32x32, as PNGs\n"
    "  train --config CONFIG.json --data faces|faces-v1|fashion-mnist|DIR --out MODEL_DIR\n"
    "        [--steps 1000] [--batch 32] [--lr 2e-4] [--warmup 0] [--ema 0.999] [--flip]\n"
    "        [--seed 0] [--save-every 500] [--resume] [--weight-decay 0]\n"
    "        [--data-count N] [--data-seed S] [--sample-every N] [--sample-count 64]\n"
    "        [--sample-steps 50] [--winograd] [--beta-start 1e-4] [--beta-end 0.02]\n"
    "        [--prediction eps|v|sample] [--zero-snr] [--schedule linear|cosine]\n"
    "                                      train a UNet2DModel (eps, v or x0 MSE, AdamW,\n"
    "                                      EMA) from\n"
    "                                      random weights; --resume continues MODEL_DIR\n"
    "                                      up to --steps in all; samples.png shows\n"
    "                                      --sample-count samples at the end (and every\n"
    "                                      --sample-every steps); --winograd: faster 3x3\n"
    "                                      convolutions, but a run then reproduces only\n"
    "                                      with --winograd; betas: linear, written to\n"
    "                                      scheduler/scheduler_config.json\n"
    "  sample MODEL --count N --out GRID.png [--steps 50] [--seed 0] [--batch 16]\n"
    "        [--cols C] [--zoom auto] [--boost-t 0] [--no-clip] [--tensors OUT.safetensors] [--json]\n"
    "        [--timesteps authors|leading|trailing]\n"
    "                                      DDIM samples from pure noise as one PNG grid\n"
    "  generate MODEL --prompt P [--negative-prompt N] [--guidance 7.5] [--steps 50] [--seed 0]\n"
    "        --out IMG.png [--tensors OUT.safetensors] [--timesteps authors|leading|trailing]\n"
    "                                      one image from a text-to-image model (latents\n"
    "                                      sampled with guidance on the authors' grid or\n"
    "                                      diffusers' timesteps, decoded)\n"
    "  mask LABELS.png --part PART [--dilate N] --out M.png\n"
    "                                      a part mask (255 inside) from a label map\n"
    "  tokenize MODEL (--prompt TEXT | --prompt-file FILE) [--json]\n"
    "                                      a prompt's CLIP token ids as Stable Diffusion's\n"
    "                                      pipeline makes them (start, tokens, end, padding to\n"
    "                                      model_max_length); MODEL: the pipeline folder or its\n"
    "                                      tokenizer/; --json adds the count and the tokens\n"
    "  help                                this text\n"
    "\n"
    "MODEL is one of:\n"
    "  a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors,\n"
    "    or a PyTorch diffusion_pytorch_model.bin);\n"
    "  a guided-diffusion (ADM / P2) folder (config.json with \"_class_name\": \"ADMUNetModel\"\n"
    "    + model.safetensors or model.pt);\n"
    "  a bare guided-diffusion checkpoint such as ffhq_p2.pt: give --preset p2, or\n"
    "    --image-size N and --head-channels N (or --heads N); the rest is read from the\n"
    "    tensor shapes (loco info prints what was inferred; loco convert writes a folder);\n"
    "  a MoLRG model file (loco molrg);\n"
    "  a Stable Diffusion pipeline folder (model_index.json, unet/, vae/, text_encoder/,\n"
    "    tokenizer/, scheduler/): --image-size N picks the image (and latent) size.\n"
    "Global options: --threads N, --quiet, --progress-json, --preset p2, --image-size N, --head-channels N, --heads N,\n"
    "--heads-upsample N.\n";

/* ---- main ------------------------------------------------------------------ */

static const struct {
    const char *name;
    int (*run)(args *a);
} commands[] = {
    {"info", cmd_info},       {"init", cmd_init},   {"eps", cmd_eps},         {"jacobian", cmd_jacobian},
    {"edit", cmd_edit},       {"apply", cmd_apply}, {"molrg", cmd_molrg},     {"dataset", cmd_dataset},
    {"mask", cmd_mask},       {"analyze", cmd_analyze}, {"convert", cmd_convert}, {"train", cmd_train},
    {"sample", cmd_sample},   {"generate", cmd_generate},   {"tokenize", cmd_tokenize}, {"serve", cmd_serve},
};

int main(int argc, char **argv) {
    /* OpenMP's idle threads must not spin long: libgomp reads that when it
     * loads, so restart once with a short spin unless the user chose a wait
     * policy (see loco_threads_reexec) */
    loco_threads_reexec(argv);
    loco_set_log(log_cb, NULL);
    /* global options may appear anywhere; strip them first */
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0) {
            g_quiet = 1;
        } else if (strcmp(argv[i], "--progress-json") == 0) {
            g_progress_json = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            long long th;
            if (!parse_long(argv[i + 1], 1, 1024, &th)) return usage_error("bad --threads '%s'", argv[i + 1]);
            loco_set_threads((int)th);
            i++;
        } else if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc) {
            if (strcmp(argv[i + 1], "p2") != 0) return usage_error("unknown --preset '%s' (known: p2)", argv[i + 1]);
            g_open.preset = argv[++i];
        } else if ((strcmp(argv[i], "--head-channels") == 0 || strcmp(argv[i], "--heads") == 0 ||
                    strcmp(argv[i], "--heads-upsample") == 0 || strcmp(argv[i], "--image-size") == 0) && i + 1 < argc) {
            long long v;
            const int size = strcmp(argv[i], "--image-size") == 0;
            if (!parse_long(argv[i + 1], 1, size ? 8192 : 65536, &v)) return usage_error("bad value '%s'", argv[i + 1]);
            if (size) g_open.image_size = (int)v;
            else if (strcmp(argv[i], "--heads") == 0) g_open.heads = (int)v;
            else if (strcmp(argv[i], "--heads-upsample") == 0) g_open.heads_upsample = (int)v;
            else g_open.head_channels = (int)v;
            i++;
        } else {
            argv[n++] = argv[i];
        }
    }
    argc = n;
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("loco %s\n", LOCO_VERSION);
        return 0;
    }
    args a = {argc, argv, 2};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(&a);
    return usage_error("unknown command '%s'", argv[1]);
}
