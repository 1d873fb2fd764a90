/* adm.h - the guided-diffusion UNetModel ("ADM", P2-weighting) family: its
 * configuration (adm_config.c), its network as a graph (adm_graph.c) and its
 * denoiser (adm.c, registered in registry.c). */
#ifndef LOCO_FAMILY_ADM_H
#define LOCO_FAMILY_ADM_H

#include "families/adm_config.h"
#include "graph/graph.h"

/* Builds the graph of c (no weights yet). On failure g is left empty. */
loco_status adm_build(graph *g, const adm_config *c);

#endif
