/* adm_config.h - configuration of OpenAI guided-diffusion's UNetModel ("ADM",
 * the P2-weighting checkpoints ffhq_p2.pt, afhqdog_p2.pt, flower_p2.pt,
 * metface_p2.pt): our config.json format, inference of the configuration from
 * a state dict's tensor names and shapes, and the parameter list a
 * configuration implies (names and shapes as in guided-diffusion's
 * state_dict, in its order). The graph builder consumes adm_config and
 * adm_config_params; nothing here reads weights or builds a graph.
 *
 * config.json (tests/fixtures/adm-small/README.md): "_class_name"
 * "ADMUNetModel", then the flags of guided-diffusion's script_util.create_model
 * under their script names:
 *   image_size            int, required
 *   num_channels          int, required (model_channels; even)
 *   num_res_blocks        int, required (1..64)
 *   channel_mult          string "1,1,2,2,4,4"; "" (the default) means
 *                         create_model's default for image_size: 512 ->
 *                         0.5,1,1,2,2,4,4, 256 -> 1,1,2,2,4,4, 128 ->
 *                         1,1,2,3,4, 64 -> 1,2,3,4, 32 -> 1,2,2,2
 *   attention_resolutions string of spatial resolutions "16,8", required;
 *                         attention at the level whose downsampling factor is
 *                         image_size / resolution. Each must divide
 *                         image_size (guided-diffusion would silently floor
 *                         the quotient); one that matches no level is ignored
 *                         with a warning, as guided-diffusion ignores it. ""
 *                         means no attention outside the middle block (our
 *                         extension: guided-diffusion's int("") fails).
 *   num_heads             int; -1 or >= 1; required when num_head_channels is
 *                         -1 (create_model defaults it to 1, the scripts'
 *                         model_and_diffusion_defaults to 4)
 *   num_head_channels     int, -1 (default: use num_heads) or >= 1
 *   num_heads_upsample    int, -1 (default: num_heads) or >= 1
 *   use_scale_shift_norm  bool, required (the two defaults disagree too)
 *   learn_sigma, resblock_updown   bool, default false
 *   use_new_attention_order        bool, default false; true is refused (not
 *                                  supported yet)
 *   class_cond            bool, default false; true is refused
 *   diffusion_steps       int, default 1000; only 1000 is supported
 *   noise_schedule        string, default "linear"; only "linear"
 *   predict_xstart, rescale_timesteps   bool, default false; true is refused
 *                         (the model would not predict eps of the raw t)
 * Ignored (type-checked): use_fp16, use_checkpoint, dropout, use_kl,
 * rescale_learned_sigmas, timestep_respacing, and every key starting with '_'
 * (_derived, _source). Another key is ignored with a warning (loco_log). A
 * key that appears twice, text after the object, or a key of the wrong type
 * is an error naming the file and the key.
 *
 * Architecture facts the graph builder relies on (guided-diffusion): GroupNorm
 * of 32 groups everywhere (so every level's channel count is a multiple of
 * 32), time embedding width 4 * model_ch, in_ch 3, out_ch 6 with learn_sigma
 * else 3, the middle block always has attention. */
#ifndef LOCO_ADM_CONFIG_H
#define LOCO_ADM_CONFIG_H

#include "internal.h"

#define ADM_MAX_LEVELS 8
#define ADM_GROUPS 32 /* GroupNorm32 */

typedef struct adm_config {
    int image_size;                 /* square images                               */
    int in_ch, model_ch, out_ch;    /* 3, num_channels, 3 or 6 (learn_sigma)       */
    int num_res_blocks;
    int n_levels;                   /* entries of channel_mult                     */
    /* Deviation from int: the default for image_size 512 has 0.5. Multipliers
     * read from a config string are whole numbers. */
    double channel_mult[ADM_MAX_LEVELS];
    /* Channels of level i: int(channel_mult[i] * model_ch), as UNetModel
     * computes them (the first convolution outputs level_ch[0]). The graph
     * builder should use these rather than multiply itself. */
    int level_ch[ADM_MAX_LEVELS];
    /* 1: attention at level i (downsampling factor 2^i is in attention_ds):
     * after every ResBlock of that level, in input_blocks and output_blocks. */
    int attn_level[ADM_MAX_LEVELS];
    int num_heads, num_head_channels, num_heads_upsample; /* as the flags: -1 = unset */
    int learn_sigma, use_scale_shift_norm, resblock_updown, use_new_attention_order; /* 0 or 1 */
    int diffusion_steps;            /* 1000 (linear schedule 1e-4..0.02)           */
} adm_config;

/* Parses a config.json in the format above; path names the file in errors.
 * Refuses (LOCO_E_UNSUPPORTED) class_cond true, use_new_attention_order true
 * (not supported yet), noise_schedule other than "linear", and absurd values:
 * sizes out of range, a level whose channels are not a multiple of 32,
 * heads that do not divide an attention block's channels, an image_size
 * not divisible by 2^(levels-1), attention score matrices beyond the memory
 * limit. Malformed text or keys: LOCO_E_FORMAT. On failure *c is zeroed. */
loco_status adm_config_parse(adm_config *c, const char *text, size_t len, const char *path);

/* Heads of an attention block with ch channels (upsample = 1 for the
 * output_blocks' attention): ch / num_head_channels when num_head_channels is
 * not -1, else num_heads (num_heads_upsample for output blocks, where -1
 * means num_heads). The middle block uses upsample = 0. */
int adm_heads(const adm_config *c, int ch, int upsample);

/* Checks a config made in code (as parse and infer check theirs). */
loco_status adm_config_validate(const adm_config *c);

/* The named preset: "p2" = the P2-weighting checkpoints (P2_DICT of LOCO
 * Edit's script_util on top of model_and_diffusion_defaults): image_size 256,
 * num_channels 128, num_res_blocks 1, channel_mult "" (1,1,2,2,4,4),
 * attention_resolutions "16", num_heads 4 (unused), num_head_channels 64,
 * learn_sigma, use_scale_shift_norm, resblock_updown; 93,563,910 parameters
 * in 362 tensors. Unknown names: LOCO_E_INVALID_ARGUMENT. */
loco_status adm_config_preset(adm_config *c, const char *name);

/* Writes the config as JSON in the config.json format (every flag written
 * out; channel_mult as a string of whole numbers, or "" for the 512 default
 * with its 0.5), plus an informational "_derived" object as the fixtures
 * have (parameter and tensor counts, heads of every attention block...).
 * *json is new memory the caller frees with free(). */
loco_status adm_config_to_json(const adm_config *c, char **json);

/* Hints for adm_config_infer: what tensor shapes do not determine. */
typedef struct adm_hints {
    const char *preset;   /* NULL or "p2": also checks the weights are that architecture */
    int image_size;       /* 0 = from the preset, else refused with a clear error        */
    int head_channels;    /* 0 = unset; else num_head_channels                           */
    int heads;            /* 0 = unset; else num_heads                                   */
    int heads_upsample;   /* 0 = as heads; else num_heads_upsample (needs heads).
                           * Addition to the sketch: adm-small_legacy needs it.        */
} adm_hints;

/* Infers every flag the tensor names and shapes determine from a state dict
 * given as n names with shapes (tensor i: names[i], ndim[i] (0..4),
 * shape[i][0..ndim-1]): num_channels, channel_mult, num_res_blocks, the
 * attention levels, learn_sigma (out.2 has 6 output channels),
 * use_scale_shift_norm (emb_layers.1 outputs 2*C), resblock_updown (a
 * downsampling entry holding a ResBlock instead of `.op`; with one level
 * there is none and it stays false). image_size and the head layout come
 * from hints or the preset (hints that contradict each other or the preset
 * are refused, LOCO_E_INVALID_ARGUMENT; weights that are not the preset's
 * architecture, LOCO_E_SHAPE). Then checks that the state dict is exactly
 * what the inferred config implies, as adm_config_check_tensors does. what
 * names the weights in errors. h may be NULL (no hints). On success, when
 * report is not NULL, *report receives a human-readable multi-line summary
 * of what was inferred and what came from hints, the preset or defaults (new
 * memory, free()); on failure *report is NULL and *c is zeroed. */
loco_status adm_config_infer(adm_config *c, size_t n, const char *const *names, const int *ndim,
                             const int64_t (*shape)[4], const adm_hints *h, const char *what, char **report);

/* One parameter of the model: checkpoint name, shape. */
typedef struct adm_param {
    char name[96];
    int ndim;
    int64_t shape[4];
} adm_param;

static inline int64_t adm_param_numel(const adm_param *p) {
    int64_t k = 1;
    for (int d = 0; d < p->ndim; d++) k *= p->shape[d];
    return k;
}

/* The full list of parameters the config implies, in guided-diffusion's
 * state_dict order (module registration order: time_embed, input_blocks,
 * middle_block, output_blocks, out; in a ResBlock in_layers, emb_layers,
 * out_layers, skip_connection; in an attention block norm, qkv, proj_out;
 * weight before bias) - the order of the fixtures' model.pt. *out is new
 * memory of *n entries (free()). The config is validated first. */
loco_status adm_config_params(const adm_config *c, adm_param **out, size_t *n);

/* Checks that a state dict (as for adm_config_infer) holds exactly the
 * parameters the config implies: a missing tensor (LOCO_E_NOT_FOUND), one of
 * the wrong shape (LOCO_E_SHAPE), an unexpected one or a name given twice
 * (LOCO_E_FORMAT), each named in the message (with counts and the first few
 * names of each kind when there are several). what names the weights. */
loco_status adm_config_check_tensors(const adm_config *c, size_t n, const char *const *names, const int *ndim,
                                     const int64_t (*shape)[4], const char *what);

#endif
