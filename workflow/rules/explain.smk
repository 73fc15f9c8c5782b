# Explanations stage. ISIC study (section 4.3): real images and their projections into a generator,
# embedded by an ISIC classifier — distances, nearest neighbours (memorisation), 3-D t-SNE, edge cases;
# frame removal (§4.3, Fig. 5). HAM10000 study: CRP and PCX of the classifiers (Fig. 7, App. B–D).
# Its paths, lists and input functions: helpers/explain.smk.

include: "helpers/explain.smk"

from dermsynth.explain.options import (AuthenticityOptions, CrpOptions, FrameAccuracyOptions, FrameDirectionsOptions,
                                      FramelessSetOptions, PcxOptions)


rule authenticity:
    input:
        unpack(authenticity_inputs),
    output:
        table="results/explain/{gan}/authenticity.csv",
        summary="results/explain/{gan}/authenticity.json",
        coordinates="results/explain/{gan}/tsne.csv",
        tsne=report("results/explain/{gan}/tsne.png", caption="../report/tsne.rst", category="6. Explanations",
                    subcategory="{gan}", labels={"generator": "{gan}", "figure": "3-D t-SNE of embeddings"}),
        tsne_html=report("results/explain/{gan}/tsne.html", caption="../report/tsne_html.rst",
                         category="6. Explanations", subcategory="{gan}",
                         labels={"generator": "{gan}", "figure": "3-D t-SNE, interactive"}),
        projector_tensors=report("results/explain/{gan}/projector/tensors.tsv", caption="../report/projector.rst",
                                 category="6. Explanations", subcategory="{gan}",
                                 labels={"generator": "{gan}", "figure": "Projector export: embeddings"}),
        projector_metadata=report("results/explain/{gan}/projector/metadata.tsv", caption="../report/projector.rst",
                                  category="6. Explanations", subcategory="{gan}",
                                  labels={"generator": "{gan}", "figure": "Projector export: metadata"}),
        pairs=report("results/explain/{gan}/pairs.png", caption="../report/pairs.rst", category="6. Explanations",
                     subcategory="{gan}", labels={"generator": "{gan}", "figure": "closest and farthest pairs"}),
        cases=report("results/explain/{gan}/cases.png", caption="../report/cases.rst", category="6. Explanations",
                     subcategory="{gan}", labels={"generator": "{gan}", "figure": "edge and central cases"}),
        heatmaps="results/explain/{gan}/xrai.npz",
        xrai=report("results/explain/{gan}/xrai.png", caption="../report/xrai.rst", category="6. Explanations",
                    subcategory="{gan}", labels={"generator": "{gan}", "figure": "XRAI: edge and central cases"}),
    params:
        options=step_options(AuthenticityOptions),
        classifier=subpath(input.classifier, parent=True),
        out=subpath(output.table, parent=True),
    log:
        "logs/explain/authenticity/{gan}.log",
    benchmark:
        "benchmarks/explain/authenticity/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(AUTHENTICITY)
    resources:
        **gpu_resources(AUTHENTICITY),
    shell:
        "dermsynth explain authenticity --options {params.options} --network {input.network} "
        "--projection {input.projection} --lmdb {input.lmdb} --classifier {params.classifier} "
        "--out {params.out} --threads {threads} > {log} 2>&1"


# HAM10000 study (section 3.3, Fig. 7, App. B–D): CRP and PCX of each architecture's baseline and best
# filtered SA model (the Table 3 choice, made by the job from the models' validation predictions).
rule crp:
    input:
        unpack(explained_models),
    output:
        table="results/explain/crp/{arch}/crp.csv",
        summary="results/explain/crp/{arch}/crp.json",
        figure=report("results/explain/crp/{arch}/crp.png", caption="../report/crp.rst", category="6. Explanations",
                      subcategory="HAM10000 study: CRP and PCX",
                      labels={"architecture": "{arch}", "figure": "CRP, predicted class (Fig. 7)"}),
        true_class=report("results/explain/crp/{arch}/crp-true.png", caption="../report/crp.rst",
                          category="6. Explanations", subcategory="HAM10000 study: CRP and PCX",
                          labels={"architecture": "{arch}", "figure": "CRP, true class (Fig. B.1)"}),
        heatmaps="results/explain/crp/{arch}/heatmaps.npz",
        baseline=CRP_CONCEPTS_BASELINE,
        augmented=CRP_CONCEPTS_AUGMENTED,
    params:
        options=step_options(CrpOptions),
        models=model_folders,
        sizes=" ".join(HAM_SIZES),
        out=subpath(output.table, parent=True),
    log:
        "logs/explain/crp/{arch}.log",
    benchmark:
        "benchmarks/explain/crp/{arch}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(CRP)
    resources:
        **gpu_resources(CRP),
    shell:
        "dermsynth explain crp --options {params.options} --models {params.models} --sizes {params.sizes} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --out {params.out} --threads {threads} > {log} 2>&1"


rule pcx:
    input:
        unpack(explained_models),
        baseline=CRP_CONCEPTS_BASELINE,
        augmented=CRP_CONCEPTS_AUGMENTED,
    output:
        table="results/explain/pcx/{arch}/pcx.csv",
        prototypes="results/explain/pcx/{arch}/prototypes.csv",
        summary="results/explain/pcx/{arch}/pcx.json",
        baseline_figure=report("results/explain/pcx/{arch}/pcx-baseline.png", caption="../report/pcx.rst",
                               category="6. Explanations", subcategory="HAM10000 study: CRP and PCX",
                               labels={"architecture": "{arch}", "figure": "PCX, baseline (Fig. D.1)"}),
        augmented_figure=report("results/explain/pcx/{arch}/pcx-augmented.png", caption="../report/pcx.rst",
                                category="6. Explanations", subcategory="HAM10000 study: CRP and PCX",
                                labels={"architecture": "{arch}", "figure": "PCX, filtered SA model (Fig. D.2)"}),
    params:
        options=step_options(PcxOptions),
        models=model_folders,
        sizes=" ".join(HAM_SIZES),
        crp=subpath(input.baseline, parent=True),
        out=subpath(output.table, parent=True),
    log:
        "logs/explain/pcx/{arch}.log",
    benchmark:
        "benchmarks/explain/pcx/{arch}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(CRP)
    resources:
        **gpu_resources(CRP),
    shell:
        "dermsynth explain pcx --options {params.options} --models {params.models} --sizes {params.sizes} "
        "--crp {params.crp} --lmdb {input.lmdb} --manifest {input.manifest} --out {params.out} "
        "--threads {threads} > {log} 2>&1"


# ISIC study (section 4.3, Fig. 5): the dermatoscope's frame taken away along SeFa directions of explain.frames.gan —
# which directions (a proposal a reviewer may replace: explain.frames.file), a synthetic set without frames (trained on
# alone: ISIC scenario frameless-synth), and every ISIC classifier's accuracy on real test images with and without one.
rule frame_directions:
    input:
        network=NETWORK,
        sefa=lambda wc: SEFA.format(gan=wc.gan, layers=FRAMES["layer_range"]),
    output:
        table=FRAME_DIRECTIONS,
        summary="results/explain/frames/{gan}/directions.json",
        figure=report("results/explain/frames/{gan}/directions.png", caption="../report/frame_directions.rst",
                      category="6. Explanations", subcategory="frame removal",
                      labels={"generator": "{gan}", "figure": "frame-removal directions (Fig. 5)"}),
        proposal=FRAME_PROPOSAL,
    params:
        options=step_options(FrameDirectionsOptions),
    log:
        "logs/explain/frame_directions/{gan}.log",
    benchmark:
        "benchmarks/explain/frame_directions/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(FRAMES)
    resources:
        **gpu_resources(FRAMES, cpu_mem_mb=4000, gpu_mem_mb=8000),
    shell:
        "dermsynth explain frame-directions --options {params.options} --network {input.network} --sefa {input.sefa} "
        "--out {output.table} --figure {output.figure} --proposal {output.proposal} --threads {threads} > {log} 2>&1"


rule frameless_set:
    input:
        unpack(frameless_inputs),
    output:
        report(directory(FRAMELESS_SET), patterns=["{figure,[^/]+}.png"], caption="../report/frameless.rst",
               category="6. Explanations", subcategory="frame removal", labels={"figure": "frameless set: before | after"}),
    params:
        options=step_options(FramelessSetOptions),
        networks=frameless_networks,
    log:
        "logs/synthetic/frameless.log",
    benchmark:
        "benchmarks/synthetic/frameless.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: gpu_threads(FRAMES)
    resources:
        **gpu_resources(FRAMES, cpu_mem_mb=8000, gpu_mem_mb=8000),
    shell:
        "dermsynth explain frameless-set --options {params.options} {params.networks} --sefa {input.sefa} "
        "--moves {input.moves} --out {output} --threads {threads} > {log} 2>&1"


rule isic_frames:
    input:
        **dataset_files(ISIC["dataset"]),
        models=isic_model_outputs,
    output:
        table=report(FRAME_ACCURACY, caption="../report/isic_frames.rst", category="5. Classifiers",
                     subcategory="ISIC study, Table 2"),
        summary=Path(FRAME_ACCURACY).with_suffix(".json").as_posix(),
    params:
        options=step_options(FrameAccuracyOptions),
        models=model_folders,
    log:
        "logs/tables/isic_frames.log",
    conda:
        "../envs/dermsynth.yaml"
    resources:
        **SMALL_JOB,
    shell:
        "dermsynth explain frame-accuracy --options {params.options} --models {params.models} --lmdb {input.lmdb} "
        "--manifest {input.manifest} --out {output.table} > {log} 2>&1"
