# The app on the shipped checkpoints: docker build -t pokelab . && docker run -p 7860:7860 pokelab
# For a GPU image, start from a CUDA base image and install the matching torch build first.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 GRADIO_SERVER_NAME=0.0.0.0
WORKDIR /app
COPY pyproject.toml requirements.txt README.md ./
COPY engines ./engines
COPY app ./app
COPY studio ./studio
COPY checkpoints ./checkpoints
RUN pip install -r requirements.txt
EXPOSE 7860 8501
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "7860"]
