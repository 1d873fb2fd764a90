#!/bin/sh
# test_sd_cli.sh - a Stable Diffusion pipeline folder from the command line:
# loco info, loco eps with a prompt (the guided eps), and the errors a
# missing or misplaced prompt gives.
. "$(dirname "$0")/cli_lib.sh"
cli_setup test_sd_cli.sh

P="${LOCO_FIXTURES:-tests/fixtures}/sd-tiny/pipeline"
run_ok "info on an SD pipeline folder" "$LOCO" info "$P" --image-size 32
check "info names the family and the sizes" 'grep -q "Stable Diffusion" "$T/stdout" && grep -q "4x16x16 latents, 32x32 images" "$T/stdout"'
run_ok "info --json" "$LOCO" info "$P" --image-size 32 --json
check "info --json: family StableDiffusion" 'grep -q "\"family\": \"StableDiffusion\"" "$T/stdout"'

# a latent of zeros [1, 4, 16, 16]
st_header "$T/x.safetensors" x 1,4,16,16 4096
head -c 4096 /dev/zero >>"$T/x.safetensors"
run_ok "eps with a prompt (guided, 7.5)" "$LOCO" eps "$P" --image-size 32 --x "$T/x.safetensors" --t 500 \
    --prompt "a photo of a man" --out "$T/e.safetensors"
check "eps written" '[ -s "$T/e.safetensors" ]'
run_ok "eps with a negative prompt and guidance 3" "$LOCO" eps "$P" --image-size 32 --x "$T/x.safetensors" --t 500 \
    --prompt "a photo of a man" --negative-prompt "blurry" --guidance 3 --out "$T/e2.safetensors"
check "another guidance, another eps" '! cmp -s "$T/e.safetensors" "$T/e2.safetensors"'

"$LOCO" eps "$P" --image-size 32 --x "$T/x.safetensors" --t 500 --out "$T/e3.safetensors" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "eps without a prompt: error naming it (exit $rc)" '[ $rc -ne 0 ] && grep -q "prompt" "$T/stderr" && [ ! -e "$T/e3.safetensors" ]'
"$LOCO" eps "$P" --image-size 32 --x "$T/x.safetensors" --t 500 --prompt x --guidance 1e9 --out "$T/e4.safetensors" \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "absurd --guidance: usage error (exit $rc)" '[ $rc -eq 2 ]'
U="${LOCO_FIXTURES:-tests/fixtures}/unet-small"
st_header "$T/xu.safetensors" x 1,3,32,32 12288
head -c 12288 /dev/zero >>"$T/xu.safetensors"
"$LOCO" eps "$U" --x "$T/xu.safetensors" --t 500 --prompt "a face" --out "$T/e5.safetensors" >"$T/stdout" 2>"$T/stderr"
check "a prompt for an unconditional model: error" 'grep -q "takes no prompt" "$T/stderr"'
run_ok "generate one image" "$LOCO" generate "$P" --image-size 32 --prompt "a photo of a man" --steps 10 --seed 3 \
    --out "$T/g1.png" --tensors "$T/g1.safetensors"
check "generate wrote a 32x32 PNG and its latents" '[ "$(png_size "$T/g1.png")" = "32x32" ] && [ -s "$T/g1.safetensors" ]'
run_ok "generate --save-tensors" "$LOCO" generate "$P" --image-size 32 --prompt "a photo of a man" --steps 10 --seed 3 \
    --out "$T/gs.png" --save-tensors --quiet
check "the latents beside the PNG, the same file as --tensors" 'cmp -s "$T/gs.safetensors" "$T/g1.safetensors" &&
    cmp -s "$T/gs.png" "$T/g1.png"'
run_ok "generate again with the same seed" "$LOCO" generate "$P" --image-size 32 --prompt "a photo of a man" --steps 10 \
    --seed 3 --out "$T/g2.png"
check "the same seed gives the same bytes" 'cmp -s "$T/g1.png" "$T/g2.png"'
run_ok "sample a grid with a prompt" "$LOCO" sample "$P" --image-size 32 --prompt "a cat" --count 4 --steps 5 \
    --out "$T/grid.png"
check "a 4-image grid" '[ -s "$T/grid.png" ]'
"$LOCO" generate "$P" --image-size 32 --out "$T/g3.png" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "generate without a prompt: usage error (exit $rc), no output" '[ $rc -eq 2 ] && [ ! -e "$T/g3.png" ]'
"$LOCO" info "$P" --image-size 30 >"$T/stdout" 2>"$T/stderr"
check "an image size the VAE and UNet cannot divide: error" 'grep -q "image size 30" "$T/stderr"'

# T-LOCO edits
run_ok "edit: text-supervised, from a seed" "$LOCO" edit "$P" --image-size 32 --prompt "a photo of a man" \
    --edit-prompt "a photo of a man wearing glasses" --seed 0 --rect 8,16,8,24 --out "$T/e1" --steps 20 \
    --max-iter 5 --min-iter 2 --save-tensors
check "edit outputs (a strip of 4 32x32 images zoomed 4x by default, one direction)" \
    '[ "$(png_size "$T/e1/strip.png")" = "512x128" ] && [ "$(png_size "$T/e1/recon.png")" = "32x32" ] && [ -s "$T/e1/directions.safetensors" ] && tr -d " \t\n" <"$T/e1/report.json" | grep -q "\"rank\":1,"'
run_ok "the same edit again" "$LOCO" edit "$P" --image-size 32 --prompt "a photo of a man" \
    --edit-prompt "a photo of a man wearing glasses" --seed 0 --rect 8,16,8,24 --out "$T/e2" --steps 20 \
    --max-iter 5 --min-iter 2
check "the same seed gives the same images" 'cmp -s "$T/e1/strip.png" "$T/e2/strip.png"'
run_ok "edit: unsupervised, from an image (encoded, inverted)" "$LOCO" edit "$P" --image-size 32 \
    --prompt "a photo of a man" --image "$T/g1.png" --rect 8,16,8,24 --out "$T/e3" --steps 20 --inv-steps 20 \
    --rank 2 --null-rank 2 --max-iter 4 --min-iter 2
check "two directions, edits written" '[ -s "$T/e3/edit_d0_s+8.png" ] && tr -d " \t\n" <"$T/e3/report.json" | grep -q "\"rank\":2,"'
run_ok "edit: from a latent file" "$LOCO" edit "$P" --image-size 32 --prompt "a man" --latent "$T/g1.safetensors" \
    --rect 8,16,8,24 --out "$T/e4" --steps 20 --max-iter 3 --min-iter 1
"$LOCO" edit "$P" --image-size 32 --seed 0 --rect 8,16,8,24 --out "$T/e5" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "edit without a prompt: usage error (exit $rc), no output" '[ $rc -eq 2 ] && [ ! -e "$T/e5" ]'
"$LOCO" edit "$P" --image-size 32 --prompt "a man" --image "$T/g1.png" --latent "$T/g1.safetensors" --rect 8,16,8,24 \
    --out "$T/e6" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "--image and --latent together: usage error (exit $rc)" '[ $rc -eq 2 ]'
"$LOCO" edit "$P" --image-size 32 --prompt "a man" --edit-prompt "a man with a hat" --rank 2 --seed 0 \
    --rect 8,16,8,24 --out "$T/e7" >"$T/stdout" 2>"$T/stderr"
check "a text-supervised edit with rank 2: error before any work" 'grep -q "one direction" "$T/stderr" && [ ! -e "$T/e7" ]'

# diffusers' timesteps (--timesteps leading|trailing; the numbers: test_sd_ddim)
run_ok "generate on the leading timesteps" "$LOCO" generate "$P" --image-size 32 --prompt "a photo of a man" \
    --steps 4 --seed 3 --timesteps leading --out "$T/l1.png" --tensors "$T/l1.safetensors" --json
check "--json and the latents' metadata say leading" \
    'grep -q "\"timesteps\": \"leading\"" "$T/stdout" && grep -q "\"timesteps\":\"leading\"" "$T/l1.safetensors"'
run_ok "generate with no --timesteps, same seed and steps" "$LOCO" generate "$P" --image-size 32 \
    --prompt "a photo of a man" --steps 4 --seed 3 --out "$T/a1.png" --json
check "the authors' grid is the default and another schedule" \
    'grep -q "\"timesteps\": \"authors\"" "$T/stdout" && ! cmp -s "$T/l1.png" "$T/a1.png"'
run_ok "sample on the trailing timesteps" "$LOCO" sample "$P" --image-size 32 --prompt "a cat" --count 2 --steps 4 \
    --timesteps trailing --out "$T/tgrid.png"
check "a trailing grid written" '[ -s "$T/tgrid.png" ]'
for bad in linspace LEADING ""; do
    "$LOCO" generate "$P" --image-size 32 --prompt x --timesteps "$bad" --out "$T/tb.png" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    check "generate --timesteps '$bad': usage error (exit $rc), no output" \
        '[ $rc -eq 2 ] && grep -q "timesteps" "$T/stderr" && [ ! -e "$T/tb.png" ]'
done
"$LOCO" sample "$P" --image-size 32 --prompt x --count 1 --out "$T/tb.png" --timesteps >"$T/stdout" 2>"$T/stderr"
rc=$?
check "sample --timesteps without a value: usage error (exit $rc)" '[ $rc -eq 2 ] && [ ! -e "$T/tb.png" ]'
"$LOCO" generate "$P" --image-size 32 --prompt x --steps 1000 --timesteps leading --out "$T/tb.png" \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "1000 leading steps with steps_offset 1 pass timestep 999: error (exit $rc)" \
    '[ $rc -eq 2 ] && grep -q "timestep 1000" "$T/stderr" && [ ! -e "$T/tb.png" ]'
run_ok "edit on the leading timesteps" "$LOCO" edit "$P" --image-size 32 --prompt "a photo of a man" --seed 0 \
    --rect 8,16,8,24 --out "$T/el" --steps 4 --t-edit 0.5 --rank 1 --null-rank 1 --max-iter 2 --min-iter 1 \
    --timesteps leading
check "report.json and directions.safetensors record leading, the edit at timestep 501" \
    'tr -d " \t\n" <"$T/el/report.json" | grep -q "\"timesteps\":\"leading\"" &&
     tr -d " \t\n" <"$T/el/report.json" | grep -q "\"t_edit_value\":501," &&
     grep -q "\"timesteps\":\"leading\"" "$T/el/directions.safetensors"'
run_ok "edit on the authors' grid records it" "$LOCO" edit "$P" --image-size 32 --prompt "a photo of a man" --seed 0 \
    --rect 8,16,8,24 --out "$T/ea" --steps 4 --t-edit 0.5 --rank 1 --null-rank 1 --max-iter 2 --min-iter 1
check "report.json says authors" 'tr -d " \t\n" <"$T/ea/report.json" | grep -q "\"timesteps\":\"authors\""'
"$LOCO" edit "$P" --image-size 32 --prompt x --seed 0 --rect 8,16,8,24 --out "$T/eb" --timesteps sideways \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "edit --timesteps sideways: usage error (exit $rc), no output" \
    '[ $rc -eq 2 ] && grep -q "sideways" "$T/stderr" && [ ! -e "$T/eb" ]'

# loco apply re-inverts with the recorded timesteps (a pixel model: apply takes no prompts yet)
F=models/faces32
run_ok "faces32: edit on the leading timesteps" "$LOCO" --quiet edit "$F" --image "$F/example.png" --rect 8,16,8,24 \
    --out "$T/fl" --steps 4 --inv-steps 4 --rank 1 --null-rank 1 --max-iter 2 --min-iter 1 --strengths 3 \
    --timesteps leading
run_ok "faces32: apply those directions to the same image" "$LOCO" --quiet apply "$F" \
    --directions "$T/fl/directions.safetensors" --image "$F/example.png" --out "$T/fla" --strengths 3
check "apply reproduces the edit's bytes (same schedule)" \
    'cmp -s "$T/fl/recon.png" "$T/fla/img0_recon.png" && cmp -s "$T/fl/edit_d0_s+3.png" "$T/fla/img0_edit_d0_s+3.png"'
run_ok "faces32: the same edit on the authors' grid" "$LOCO" --quiet edit "$F" --image "$F/example.png" \
    --rect 8,16,8,24 --out "$T/fa" --steps 4 --inv-steps 4 --rank 1 --null-rank 1 --max-iter 2 --min-iter 1 \
    --strengths 3
check "another schedule, another reconstruction" '! cmp -s "$T/fl/recon.png" "$T/fa/recon.png"'
# loco apply of T-LOCO directions: the prompts and schedule the directions
# file records, the start inverted (or sampled down) under the plain guidance
run_ok "apply the text-supervised directions to the same seed" "$LOCO" apply "$P" --image-size 32 \
    --directions "$T/e1/directions.safetensors" --seed 0 --out "$T/a1"
check "apply used the recorded prompt" 'grep -q "prompt \"a photo of a man\" (recorded)" "$T/stderr"'
# the same start, directions, strengths and batch: the same floats, so the
# same PNG bytes (bound: 0, every byte equal)
check "apply reproduces the edit's reconstruction and edits, byte for byte" \
    'cmp -s "$T/e1/recon.png" "$T/a1/img0_recon.png" && cmp -s "$T/e1/edit_d0_s-8.png" "$T/a1/img0_edit_d0_s-8.png" && cmp -s "$T/e1/edit_d0_s+8.png" "$T/a1/img0_edit_d0_s+8.png" && cmp -s "$T/e1/strip.png" "$T/a1/img0_strip.png"'
run_ok "apply the unsupervised directions to the image they were found on" "$LOCO" apply "$P" --image-size 32 \
    --directions "$T/e3/directions.safetensors" --image "$T/g1.png" --latent "$T/g1.safetensors" --out "$T/a2"
check "from an image (VAE-encoded, inverted): the edit's images, byte for byte" \
    'cmp -s "$T/e3/recon.png" "$T/a2/img0_recon.png" && cmp -s "$T/e3/edit_d0_s+8.png" "$T/a2/img0_edit_d0_s+8.png" && cmp -s "$T/e3/strip.png" "$T/a2/img0_strip.png"'
check "a latent start too: 32x32 images, a strip of 4 (zoomed 4x)" '[ "$(png_size "$T/a2/img1_strip.png")" = "512x128" ] && [ "$(png_size "$T/a2/img1_recon.png")" = "32x32" ] && [ -s "$T/a2/img1_edit_d0_s-8.png" ]'
run_ok "apply under another prompt" "$LOCO" apply "$P" --image-size 32 --directions "$T/e1/directions.safetensors" \
    --seed 0 --prompt "a photo of a cat" --out "$T/a3"
check "another prompt, other images" '! cmp -s "$T/e1/edit_d0_s+8.png" "$T/a3/img0_edit_d0_s+8.png"'
run_ok "apply with another guidance" "$LOCO" apply "$P" --image-size 32 --directions "$T/e1/directions.safetensors" \
    --seed 0 --guidance 2 --out "$T/a4"
check "another guidance, other images" '! cmp -s "$T/e1/edit_d0_s+8.png" "$T/a4/img0_edit_d0_s+8.png"'
"$LOCO" apply "$P" --image-size 64 --directions "$T/e1/directions.safetensors" --seed 0 --out "$T/a5" \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "directions of another latent size: error naming the tensor and sizes (exit $rc), no output" \
    '[ $rc -eq 1 ] && grep -q "directions.*\[1,4,16,16\].*\[r,4,32,32\]" "$T/stderr" && [ ! -e "$T/a5" ]'
st_header "$T/c3.safetensors" directions 1,3,16,16 3072
head -c 3072 /dev/zero >>"$T/c3.safetensors"
"$LOCO" apply "$P" --image-size 32 --directions "$T/c3.safetensors" --seed 0 --out "$T/a5" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "directions of 3 channels: error (exit $rc), no output" '[ $rc -eq 1 ] && grep -q "\[1,3,16,16\]" "$T/stderr" && [ ! -e "$T/a5" ]'
# a MoLRG model of the SD latent's shape: its directions fit in shape but
# not in family, both ways
"$LOCO" molrg init "$T/molrg.safetensors" --n 4x16x16 --k 2 --d 4 --seed 1 >"$T/stdout" 2>"$T/stderr"
st_header "$T/z0.safetensors" x0 1,4,16,16 4096
head -c 4096 /dev/zero >>"$T/z0.safetensors"
run_ok "edit a 4x16x16 MoLRG model" "$LOCO" edit "$T/molrg.safetensors" --image "$T/z0.safetensors" --rect 2,6,2,6 \
    --rank 1 --null-rank 1 --max-iter 3 --min-iter 1 --steps 10 --inv-steps 10 --out "$T/me"
"$LOCO" apply "$P" --image-size 32 --directions "$T/me/directions.safetensors" --seed 0 --out "$T/a5" \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "MoLRG directions on SD: error naming both families (exit $rc), no output" \
    '[ $rc -eq 1 ] && grep -q "directions of a MoLRG model.*this model is StableDiffusion" "$T/stderr" && [ ! -e "$T/a5" ]'
"$LOCO" apply "$T/molrg.safetensors" --directions "$T/e1/directions.safetensors" --image "$T/z0.safetensors" \
    --out "$T/a5" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "SD directions on MoLRG: error (exit $rc), no output" \
    '[ $rc -eq 1 ] && grep -q "directions of a StableDiffusion model" "$T/stderr" && [ ! -e "$T/a5" ]'
"$LOCO" apply "$T/molrg.safetensors" --directions "$T/me/directions.safetensors" --image "$T/z0.safetensors" \
    --prompt "a man" --out "$T/a5" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "a prompt for apply on an unconditional model: usage error (exit $rc)" '[ $rc -eq 2 ] && grep -q "takes no prompt" "$T/stderr"'
"$LOCO" apply "$T/molrg.safetensors" --directions "$T/me/directions.safetensors" --seed 0 --out "$T/a5" \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "--seed on a pixel model: usage error (exit $rc)" '[ $rc -eq 2 ] && [ ! -e "$T/a5" ]'
# a directions file with a schedule but no prompt (and no report.json beside it)
mkdir "$T/np"
_h='{"__metadata__":{"t_edit":"0.7","steps":"20","inv_steps":"20","invert_to":"edit","boost_t":"0","seed":"0"},"directions":{"dtype":"F32","shape":[1,4,16,16],"data_offsets":[0,4096]}}'
printf "$(printf '\\%03o\\%03o\\000\\000\\000\\000\\000\\000' $((${#_h} % 256)) $((${#_h} / 256 % 256)))" >"$T/np/d.safetensors"
printf '%s' "$_h" >>"$T/np/d.safetensors"
head -c 4092 /dev/zero >>"$T/np/d.safetensors"
printf '\000\000\200\077' >>"$T/np/d.safetensors" # one entry 1.0: a unit direction
"$LOCO" apply "$P" --image-size 32 --directions "$T/np/d.safetensors" --seed 0 --out "$T/a5" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "no recorded prompt and no --prompt: usage error naming the file (exit $rc), no output" \
    '[ $rc -eq 2 ] && grep -q "np/d.safetensors records none: give --prompt" "$T/stderr" && [ ! -e "$T/a5" ]'
run_ok "the same file with --prompt" "$LOCO" apply "$P" --image-size 32 --directions "$T/np/d.safetensors" --seed 0 \
    --prompt "a photo of a man" --guidance 3 --out "$T/a5"
printf '{"parameters": {"prompt": "a photo of a man", "negative_prompt": "", "guidance": 3}}\n' >"$T/np/report.json"
run_ok "the same file, the prompt from the report.json beside it" "$LOCO" apply "$P" --image-size 32 \
    --directions "$T/np/d.safetensors" --seed 0 --out "$T/a6"
check "the report's prompt and guidance give the images of --prompt P --guidance 3" 'cmp -s "$T/a5/img0_strip.png" "$T/a6/img0_strip.png"'

# half precision: the pipeline converted to f16 opens and generates
run_ok "convert the pipeline to f16" "$LOCO" convert "$P" "$T/p16" --dtype f16
run_ok "generate with the f16 pipeline" "$LOCO" generate "$T/p16" --image-size 32 --prompt "a photo of a man" \
    --steps 10 --seed 3 --out "$T/g16.png"
check "an f16 image (32x32)" '[ "$(png_size "$T/g16.png")" = "32x32" ]'

# hostile pipeline folders: each a copy with one thing wrong
bad_copy() { rm -rf "$T/bad"; cp -r "$P" "$T/bad"; chmod -R u+w "$T/bad"; }
bad_copy
rm "$T/bad/tokenizer/merges.txt"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "a tokenizer without merges.txt: error naming it" 'grep -q "merges.txt" "$T/stderr"'
bad_copy
sed 's/"cross_attention_dim": 8/"cross_attention_dim": 16/' "$P/unet/config.json" >"$T/bad/unet/config.json"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "a text width that is not the UNet's cross-attention width: error" 'grep -q "cross_attention_dim" "$T/stderr"'
bad_copy
rm -r "$T/bad/vae"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "no vae/: error naming it" 'grep -q "vae" "$T/stderr"'
bad_copy
sed 's/"AutoencoderKL"/"AutoencoderTiny"/' "$P/model_index.json" >"$T/bad/model_index.json"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "a component of another class: error naming it" 'grep -q "AutoencoderTiny" "$T/stderr"'
bad_copy
rm "$T/bad/unet/diffusion_pytorch_model.safetensors"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "no UNet weights: error naming the file" 'grep -q "diffusion_pytorch_model" "$T/stderr"'

bad_copy
sed 's/"steps_offset": 1/"steps_offset": "one"/' "$P/scheduler/scheduler_config.json" >"$T/bad/scheduler/scheduler_config.json"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "steps_offset that is not a number: error naming the file and key" \
    'grep -q "scheduler_config.json" "$T/stderr" && grep -q "steps_offset" "$T/stderr"'
bad_copy
sed 's/"steps_offset": 1/"steps_offset": 1000/' "$P/scheduler/scheduler_config.json" >"$T/bad/scheduler/scheduler_config.json"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "steps_offset past the training timesteps: error naming it" 'grep -q "steps_offset.*999" "$T/stderr"'
bad_copy
sed 's/"set_alpha_to_one": false/"set_alpha_to_one": 0/' "$P/scheduler/scheduler_config.json" >"$T/bad/scheduler/scheduler_config.json"
"$LOCO" info "$T/bad" --image-size 32 >"$T/stdout" 2>"$T/stderr"
check "set_alpha_to_one that is not a boolean: error naming it" 'grep -q "set_alpha_to_one" "$T/stderr"'

# ---- loco init: a pipeline folder with random weights from its configs ----
run_ok "init a pipeline from model_index.json" "$LOCO" init --config "$P/model_index.json" --seed 5 "$T/init1"
check "init wrote every component" '[ -s "$T/init1/unet/diffusion_pytorch_model.safetensors" ] &&
    [ -s "$T/init1/vae/diffusion_pytorch_model.safetensors" ] && [ -s "$T/init1/text_encoder/model.safetensors" ] &&
    cmp -s "$P/tokenizer/vocab.json" "$T/init1/tokenizer/vocab.json" &&
    cmp -s "$P/scheduler/scheduler_config.json" "$T/init1/scheduler/scheduler_config.json" &&
    ! ls -d "$T"/init1.partial* >/dev/null 2>&1'
run_ok "the new pipeline generates" "$LOCO" generate "$T/init1" --image-size 32 --prompt "a photo of a man" --steps 4 \
    --seed 1 --out "$T/init1.png" --quiet
check "a 32x32 image" '[ "$(png_size "$T/init1.png")" = "32x32" ]'
run_ok "the same seed again" "$LOCO" init --config "$P/model_index.json" --seed 5 "$T/init2"
check "same seed, same weights" 'cmp -s "$T/init1/unet/diffusion_pytorch_model.safetensors" \
    "$T/init2/unet/diffusion_pytorch_model.safetensors" && cmp -s "$T/init1/text_encoder/model.safetensors" \
    "$T/init2/text_encoder/model.safetensors"'
run_ok "another seed, f16" "$LOCO" init --config "$P/model_index.json" --seed 6 --dtype f16 "$T/init3"
check "another seed, other weights" '! cmp -s "$T/init1/vae/diffusion_pytorch_model.safetensors" \
    "$T/init3/vae/diffusion_pytorch_model.safetensors"'
run_ok "the f16 pipeline opens" "$LOCO" info "$T/init3" --image-size 32
"$LOCO" init --config "$P/model_index.json" "$T/init1" >"$T/stdout" 2>"$T/stderr"; rc=$?
check "init into a folder that is not empty: error (exit $rc), folder untouched" \
    '[ $rc -ne 0 ] && grep -q "not an empty folder" "$T/stderr" && cmp -s "$T/init1/unet/diffusion_pytorch_model.safetensors" \
    "$T/init2/unet/diffusion_pytorch_model.safetensors"'
bad_copy
sed 's/"hidden_size": 8/"hidden_size": 16/' "$P/text_encoder/config.json" >"$T/bad/text_encoder/config.json"
"$LOCO" init --config "$T/bad/model_index.json" "$T/init4" >"$T/stdout" 2>"$T/stderr"; rc=$?
check "init with a text width the UNet cannot take: error before writing (exit $rc)" \
    '[ $rc -ne 0 ] && grep -q "cross_attention_dim" "$T/stderr" && [ ! -e "$T/init4" ] && ! ls -d "$T"/init4.partial* >/dev/null 2>&1'
bad_copy
rm "$T/bad/tokenizer/merges.txt"
"$LOCO" init --config "$T/bad/model_index.json" "$T/init5" >"$T/stdout" 2>"$T/stderr"; rc=$?
check "init with a tokenizer without merges.txt: error naming it, nothing written" \
    '[ $rc -ne 0 ] && grep -q "merges.txt" "$T/stderr" && [ ! -e "$T/init5" ]'

summary
