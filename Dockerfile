# wsi-ncmi for GPU servers. Build: docker build -t wsi-ncmi .
# Run:   docker run --gpus all -v /slides:/data:ro -v $PWD/work:/work -v $HOME/weights:/weights wsi-ncmi <command> ...
# The base image's torch matches constraints.txt (torch==2.14.1); nothing is downloaded at run time.
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    TORCH_HOME=/weights/torch \
    HF_HOME=/weights/huggingface \
    HF_HUB_OFFLINE=1

WORKDIR /opt/wsi-ncmi
COPY pyproject.toml constraints.txt README.md ./
COPY wsi_ncmi ./wsi_ncmi
COPY configs ./configs
COPY data_manifests ./data_manifests
RUN python -m pip install -c constraints.txt . \
    && useradd --create-home --uid 1000 wsi \
    && mkdir -p /data /work /weights \
    && chown wsi:wsi /work /weights

USER wsi
WORKDIR /work
VOLUME ["/data", "/work", "/weights"]
ENTRYPOINT ["wsi-ncmi"]
CMD ["--help"]
