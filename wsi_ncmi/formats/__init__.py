"""The files a job folder holds, each format with its writer and its typed reader side by side: tile and feature
bags, status tables, the QC table, and where each file lives."""
