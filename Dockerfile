# wsi-ncmi for GPU servers. Build: docker build -t wsi-ncmi .
# Run:   docker run --gpus all --user $(id -u):$(id -g) -v /slides:/data:ro -v $PWD/work:/work \
#          -v $HOME/weights:/weights wsi-ncmi <command> ...   (outputs on the host then belong to you)
# The base image's torch matches constraints.txt (torch==2.14.1); nothing is downloaded at run time.
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    TORCH_HOME=/weights/torch \
    HF_HOME=/weights/huggingface \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/wsi-ncmi
COPY pyproject.toml constraints.txt README.md ./
COPY wsi_ncmi ./wsi_ncmi
COPY configs ./configs
COPY data_manifests ./data_manifests
# Every optional extra but dev: Dask, DICOM and CZI readers, tuning.
# uid 1000 may already exist in the base image (Ubuntu 24.04 ships user `ubuntu`): reuse it rather than fail.
RUN python -m pip install -c constraints.txt ".[dask,dicom,czi,tune]" \
    && (getent passwd 1000 >/dev/null || useradd --create-home --uid 1000 --user-group wsi) \
    && mkdir -p /data /work /weights \
    && chown 1000:1000 /work /weights

USER 1000:1000
WORKDIR /work
VOLUME ["/data", "/work", "/weights"]
ENTRYPOINT ["wsi-ncmi"]
CMD ["--help"]
