# Explanations stage (ISIC study, section 4.3): real images and their projections into a generator,
# embedded by an ISIC classifier — distances, nearest neighbours (memorisation), 3-D t-SNE, edge cases.


rule authenticity:
    input:
        unpack(authenticity_inputs),
    output:
        table="results/explain/{gan}/authenticity.csv",
        summary="results/explain/{gan}/authenticity.json",
        coordinates="results/explain/{gan}/tsne.csv",
        tsne=report("results/explain/{gan}/tsne.png", caption="../report/tsne.rst", category="6. Explanations",
                    subcategory="{gan}", labels={"generator": "{gan}", "figure": "3-D t-SNE of embeddings"}),
        pairs=report("results/explain/{gan}/pairs.png", caption="../report/pairs.rst", category="6. Explanations",
                     subcategory="{gan}", labels={"generator": "{gan}", "figure": "closest and farthest pairs"}),
        cases=report("results/explain/{gan}/cases.png", caption="../report/cases.rst", category="6. Explanations",
                     subcategory="{gan}", labels={"generator": "{gan}", "figure": "edge and central cases"}),
        heatmaps="results/explain/{gan}/xrai.npz",
        xrai=report("results/explain/{gan}/xrai.png", caption="../report/xrai.rst", category="6. Explanations",
                    subcategory="{gan}", labels={"generator": "{gan}", "figure": "XRAI: edge and central cases"}),
    params:
        config=authenticity_config,
        classifier=lambda wc, input: str(Path(input.classifier).parent),
    log:
        "logs/explain/authenticity/{gan}.log",
    benchmark:
        "benchmarks/explain/authenticity/{gan}.tsv"
    conda:
        "../envs/dermsynth.yaml"
    threads: lambda wc: 8 if AUTHENTICITY["gpus"] else 1
    resources:
        gpu=AUTHENTICITY["gpus"],
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=lambda wc, attempt: int(AUTHENTICITY["runtime_hours"] * 60 * attempt),
    shell:
        "dermsynth authenticity --config {params.config} --gan {wildcards.gan} --network {input.network} "
        "--projection {input.projection} --lmdb {input.lmdb} --classifier {params.classifier} "
        "--out $(dirname {output.table}) --threads {threads} > {log} 2>&1"
