// The sidebar's JSON API (conversations/views.py, folder_views.py): list, change, delete and restore
// conversations; create, rename and delete folders.

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/**
 * One request to the site's JSON API. A refusal throws an Error with the server's words (else
 * `failed`), and its `code` and `parameter`; a lapsed session goes to the login page.
 */
export async function requestJSON(url, { method = "GET", body, loginUrl, failed } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) window.location.assign(loginUrl);
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(payload?.error?.detail || failed);
    error.code = payload?.error?.code;
    error.parameter = payload?.error?.parameter;
    throw error;
  }
  return payload;
}

/**
 * @param {{urls: object, any_id: string, strings: object}} data the page's data (chat-data)
 */
export function conversationApi(data) {
  const detailUrl = (id) => data.urls.conversation_detail.replace(data.any_id, id);
  const restoreUrl = (id) => data.urls.conversation_restore.replace(data.any_id, id);
  // The page's folder URL is the one of folder 0.
  const folderUrl = (id) => data.urls.folder_detail.replace(/\/0\/$/, `/${id}/`);

  const request = (url, options = {}) =>
    requestJSON(url, { ...options, loginUrl: data.urls.login, failed: data.strings.request_failed });

  return {
    /**
     * One page of the list, of the conversations matching `query`, or of one folder's; an empty
     * cursor is the first page. The list's first page also has the folders and their first pages.
     */
    list: (cursor, query = "", folder = null) => {
      const params = new URLSearchParams();
      if (cursor) params.set("before", cursor);
      if (query) params.set("q", query);
      if (folder !== null) params.set("folder", String(folder));
      const url = data.urls.conversation_list;
      return request(params.toString() ? `${url}?${params}` : url);
    },
    update: (id, changes) => request(detailUrl(id), { method: "PATCH", body: changes }),
    remove: (id) => request(detailUrl(id), { method: "DELETE" }),
    restore: (id) => request(restoreUrl(id), { method: "POST" }),
    createFolder: (name) => request(data.urls.folder_list, { method: "POST", body: { name } }),
    renameFolder: (id, name) => request(folderUrl(id), { method: "PATCH", body: { name } }),
    removeFolder: (id) => request(folderUrl(id), { method: "DELETE" }),
  };
}
